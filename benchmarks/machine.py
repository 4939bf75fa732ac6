"""The machine a benchmark ran on, printed beside its figures: speed figures compare only within one CPU."""
from __future__ import annotations

import os
from pathlib import Path

SPEED_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")  # what int8 and float32 speed need


AVX2_ONLY_ENV = "MASKAGE_AVX2_ONLY"  # set by avx2_only.py for the command it runs


def cpu_line() -> str:
    """The CPU's model name, core count and the flags the models' speed depends on; under ``avx2_only.py``, the
    flags it hides from the process and whether they are hidden (NumPy's reading of CPUID)."""
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    name = next((ln.split(":", 1)[1].strip() for ln in info.splitlines() if ln.startswith("model name")), "unknown")
    flags = set(next((ln.split(":", 1)[1].split() for ln in info.splitlines() if ln.startswith("flags")), []))
    have = [f for f in SPEED_FLAGS if f in flags]
    line = f"CPU: {name}, {os.cpu_count()} cores; flags {' '.join(have) or 'none of avx2/avx512/vnni'}"
    if os.environ.get(AVX2_ONLY_ENV) == "1":
        hidden = [f for f in have if f not in ("avx2", "fma")]
        from numpy._core._multiarray_umath import __cpu_features__ as seen

        state = "NOT hidden: NumPy still sees AVX-512" if seen.get("AVX512F") else "hidden"
        line += f"; run as an AVX2-only CPU (benchmarks/avx2_only.py): {' '.join(hidden) or 'nothing to hide'} {state}"
    return line
