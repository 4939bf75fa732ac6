"""maskage: mask state, gender and age group from face photos, as three task models and a combiner."""
from __future__ import annotations

import os

__version__ = "0.1.0"

# PyTorch's CPU allocator backs large tensors with transparent huge pages only when asked. Without them, on kernels
# whose THP mode is "madvise" (a common default), each training step's activation buffers are page-faulted in anew:
# about 200,000 faults a second here, with half the CPU time in the kernel; with them, 20x fewer faults (training
# throughput: README, "Measured"). It is read at the first large allocation, so setting it on import works even
# after torch is imported; a value the user set is kept (0 = off).
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

from .labels import AgeBins, decode, encode  # noqa: E402
from .pipeline import Pipeline, Prediction  # noqa: E402

__all__ = ["Pipeline", "Prediction", "AgeBins", "encode", "decode", "__version__"]
