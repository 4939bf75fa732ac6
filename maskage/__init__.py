"""maskage: mask state, gender and age group from face photos, as three task models and a combiner.

Importing it is cheap and changes nothing in the process: ``Pipeline`` and ``Prediction`` (and with them torch)
load on first use.
"""
from __future__ import annotations

from typing import Any

from .labels import AgeBins, decode, encode

__version__ = "1.6.0"
__all__ = ["Pipeline", "Prediction", "AgeBins", "encode", "decode", "__version__"]


def __getattr__(name: str) -> Any:
    if name in ("Pipeline", "Prediction"):
        from .pipeline import core

        return getattr(core, name)
    raise AttributeError(f"module 'maskage' has no attribute {name!r}")
