"""The machine a benchmark ran on, printed beside its figures: speed figures compare only within one CPU."""
from __future__ import annotations

import os
from pathlib import Path

SPEED_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")  # what int8 and float32 speed need


def cpu_line() -> str:
    """The CPU's model name, core count and the flags the models' speed depends on."""
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    name = next((ln.split(":", 1)[1].strip() for ln in info.splitlines() if ln.startswith("model name")), "unknown")
    flags = set(next((ln.split(":", 1)[1].split() for ln in info.splitlines() if ln.startswith("flags")), []))
    have = [f for f in SPEED_FLAGS if f in flags]
    return f"CPU: {name}, {os.cpu_count()} cores; flags {' '.join(have) or 'none of avx2/avx512/vnni'}"
