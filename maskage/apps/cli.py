"""The ``maskage`` command: thin calls into the same functions the Python API uses, one module per command group
(``cli_use``: commands that use a pipeline; ``cli_train``: commands that make models and data)."""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

from .. import __version__
from ..errors import MaskageError
from . import cli_train, cli_use
from .cli_train import cmd_train, use_huge_pages

__all__ = ["build_parser", "main", "use_huge_pages"]


def build_parser() -> argparse.ArgumentParser:
    """The ``maskage`` parser: one subcommand per command, registered by its group's module."""
    parser = argparse.ArgumentParser(prog="maskage", description="Mask state, gender and age group from face photos. "
                                     "Start with `maskage predict PHOTO`; `maskage COMMAND --help` for each command.")
    parser.add_argument("--version", action="version", version=f"maskage {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    cli_use.register(sub)
    cli_train.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``maskage`` command."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if args.command is None:  # `maskage` alone: what it can do, not an error
        parser.print_help()
        return 0
    # `train TASK CONFIG --quiet k=v`: argparse leaves key=value items after an option unparsed; they are overrides
    if args.func is cmd_train and all("=" in e and not e.startswith("-") for e in extra):
        args.overrides = [*args.overrides, *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return args.func(args)
    except (MaskageError, FileNotFoundError) as exc:  # what the user gave; any other exception is a bug: it raises
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
