"""Progress bars for long work: tqdm on a terminal, a whole line every 30 s in a log.

A training run started with ``nohup ... > log`` spends minutes on crop passes and epochs; tqdm turns itself off
when stderr is not a terminal (or fills the log with carriage returns), so there a bar writes one line every
``LOG_INTERVAL`` seconds instead.
"""

from __future__ import annotations

import io
import sys
from collections.abc import Iterable
from typing import Any, TextIO

from tqdm.auto import tqdm

LOG_INTERVAL = 30.0  # seconds between a log's progress lines


class _Lines(io.TextIOBase):
    """A file for tqdm that writes each refresh as its own line (no carriage returns)."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def write(self, text: str) -> int:
        line = text.replace("\r", "").strip()
        if line:
            self.stream.write(line + "\n")
            self.stream.flush()
        return len(text)

    def flush(self) -> None:
        self.stream.flush()


class _LogBar(tqdm):
    """tqdm whose postfix and description wait for the next interval's line: tqdm redraws at once on each
    ``set_postfix`` (a training epoch sets its running loss every batch), which in a log is a line a batch."""

    def set_postfix(self, ordered_dict: Any = None, refresh: bool = True, **kwargs: Any) -> None:
        super().set_postfix(ordered_dict, refresh=False, **kwargs)

    def set_description(self, desc: str | None = None, refresh: bool = True) -> None:
        super().set_description(desc, refresh=False)


def bar(iterable: Iterable | None = None, *, enabled: bool = True, stream: TextIO | None = None,
        **kwargs: Any) -> tqdm:
    """A tqdm bar over ``iterable`` (or ``total=``) that is off when not ``enabled``; on a terminal it redraws in
    place, elsewhere (a log file, a pipe) it writes a line every ``LOG_INTERVAL`` s and one at the end."""
    stream = sys.stderr if stream is None else stream
    if not enabled:
        return tqdm(iterable, disable=True, **kwargs)
    if stream.isatty():
        return tqdm(iterable, file=stream, **kwargs)
    kwargs.pop("leave", None)  # a log keeps every line; the final one says the step finished
    return _LogBar(iterable, file=_Lines(stream), mininterval=LOG_INTERVAL, maxinterval=LOG_INTERVAL * 2,
                ncols=100, **kwargs)
