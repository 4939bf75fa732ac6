"""maskage: mask state, gender and age group from face photos, as three task models and a combiner."""
from __future__ import annotations

__version__ = "0.1.0"

from .labels import AgeBins, decode, encode  # noqa: E402
from .pipeline import Pipeline, Prediction  # noqa: E402

__all__ = ["Pipeline", "Prediction", "AgeBins", "encode", "decode", "__version__"]
