"""Start-up cost: wall time of ``import maskage`` and of ``maskage predict one.jpg`` (a fresh process each time, as
a user runs it), and which heavy modules each loads.

    .venv/bin/python benchmarks/startup.py [--runs 5] [--photo PATH]

The goal: ``maskage predict one.jpg`` under 1.5 s on 2 cores, the first run after an install included: it is
timed with an empty cache (``MASKAGE_CACHE`` a new folder), where a model shipped without its ONNX file would be
exported first, then the runs after it.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from machine import cpu_line  # noqa: E402
HEAVY = ("torch", "timm", "facenet_pytorch", "onnxruntime", "cv2", "sklearn")


def wall(cmd: list[str], runs: int) -> float:
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True, cwd=ROOT)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--photo", help="default: the demo's bundled photo")
    args = ap.parse_args()
    py = sys.executable
    print(cpu_line())
    loaded = subprocess.run([py, "-c", f"import sys, maskage; print(*[m for m in {HEAVY!r} if m in sys.modules])"],
                            check=True, capture_output=True, text=True, cwd=ROOT).stdout.split()
    print(f"import maskage: {wall([py, '-c', 'import maskage'], args.runs):.2f} s median of {args.runs}; "
          f"heavy modules loaded: {', '.join(loaded) or 'none'}")
    print(f"python -c pass (the interpreter alone): {wall([py, '-c', 'pass'], args.runs):.2f} s")
    photo = args.photo
    if photo is None:
        from maskage.apps.demo import sample_photo

        photo = str(sample_photo())
    cmd = [py, "-m", "maskage", "predict", photo]
    with tempfile.TemporaryDirectory() as cache:
        t = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True, cwd=ROOT, env={**os.environ, "MASKAGE_CACHE": cache})
        first = time.perf_counter() - t
    print(f"maskage predict one photo, first run (empty cache): {first:.2f} s (goal < 1.5 s)")
    print(f"maskage predict one photo: {wall(cmd, args.runs):.2f} s median of {args.runs} (goal < 1.5 s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
