"""Start-up cost: wall time of ``import maskage`` and of ``maskage predict one.jpg`` (a fresh process each time, as
a user runs it), and which heavy modules each loads.

    .venv/bin/python benchmarks/startup.py [--runs 5] [--photo PATH]

the goal: ``maskage predict one.jpg`` under 1.5 s on 2 cores. The first ``predict`` after an install also
exports the models to ONNX into the cache (a few seconds, once); this measures the runs after that one.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
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
    loaded = subprocess.run([py, "-c", f"import sys, maskage; print(*[m for m in {HEAVY!r} if m in sys.modules])"],
                            check=True, capture_output=True, text=True, cwd=ROOT).stdout.split()
    print(f"import maskage: {wall([py, '-c', 'import maskage'], args.runs):.2f} s median of {args.runs}; "
          f"heavy modules loaded: {', '.join(loaded) or 'none'}")
    print(f"python -c pass (the interpreter alone): {wall([py, '-c', 'pass'], args.runs):.2f} s")
    photo = args.photo
    if photo is None:
        from maskage.apps.demo import sample_photo

        photo = str(sample_photo())
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [py, "-m", "maskage", "predict", photo, "--out", str(Path(tmp) / "p.csv")]
        subprocess.run(cmd, check=True, capture_output=True, cwd=ROOT)  # the once-only ONNX export, if not cached
        print(f"maskage predict one photo: {wall(cmd, args.runs):.2f} s median of {args.runs} (goal < 1.5 s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
