"""The pipeline: detector -> three task models -> combiner, and what it writes (rows, video, scenes, calibration).

``from maskage.pipeline import Pipeline`` works as ``from maskage import Pipeline``; the modules load on first use.
"""
from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    if name in ("Pipeline", "Prediction"):
        from . import core

        return getattr(core, name)
    if name in ("PipelineEnsemble", "load_predictor"):
        from . import ensemble

        return getattr(ensemble, name)
    raise AttributeError(f"module 'maskage.pipeline' has no attribute {name!r}")
