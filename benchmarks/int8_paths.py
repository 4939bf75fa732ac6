"""int8 on a CPU without VNNI: does it give the numbers it gives with VNNI?

The pipeline's int8 models (uint8 activations x int8 weights) run on ONNX Runtime's VNNI kernels where the CPU has
them and on its AVX2 kernels elsewhere, whose int16 sums of two products overflow with 8-bit weights. This runs the
pipeline's models (``--tasks``, default all three) on the faces of ``--photos`` here and under QEMU posing as a CPU
with AVX2 and FMA and nothing newer (``qemu-x86_64 -cpu Haswell``: ONNX Runtime then picks its AVX2 kernels), each
as a float32 export, as shipped, and re-quantised with 8-bit and with 7-bit weights (``--calibration`` photos set
the ranges), and prints for each the largest probability difference from float32 on this CPU, the share of top
classes that agree, and whether the two code paths gave identical outputs.

    apt-get install qemu-user   # the emulator, not a maskage dependency
    .venv/bin/python benchmarks/int8_paths.py [--pipeline DIR] --photos data/multi/eval/images \\
        --calibration data/calib/train/images [--n 48] [--cpu Haswell] [--tasks mask gender age]

Emulation is slow (minutes for 48 faces): it checks numbers, not speed. ``--via avx2_only`` runs the second path
at this CPU's speed instead, this CPU's AVX-512, VNNI and AMX hidden from ONNX Runtime (``avx2_only.py``), so
hundreds of faces take seconds; QEMU remains the check that needs neither CPUID faulting nor this CPU's kernels.
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from machine import cpu_line  # noqa: E402

TASKS = ("mask", "gender", "age")


def run_all(folder: Path) -> None:
    """Each ``*.onnx`` in ``folder`` on its task's inputs (``<task>.npy``), logits into ``<name>.out.npy``."""
    from maskage.onnx_files import cpu_session

    for path in sorted(folder.glob("*.onnx")):
        x = np.load(folder / f"{path.name.split('-')[0]}.npy")
        session = cpu_session(path, 2)
        np.save(folder / f"{path.stem}.out.npy", session.run(None, {"input": x})[0])


def softmax(logits: np.ndarray, heads) -> np.ndarray:
    from maskage.models.spec import head_softmax

    return head_softmax(logits.astype(np.float32), heads)


def prepare(args: argparse.Namespace, folder: Path):
    """Inputs and model files of ``args.tasks`` in ``folder``; their specs (their heads give the probabilities)."""
    from maskage import Pipeline
    from maskage.images import load_image
    from maskage.models.onnx_model import export_onnx, quantize_int8
    from maskage.pipeline.outputs import evenly, expand_inputs

    tasks = args.tasks
    pipe = Pipeline.from_pretrained(args.pipeline, backend="torch")
    source = Path(args.pipeline) if args.pipeline else Path(sys.modules["maskage"].__file__).parent / "pretrained"

    def inputs(photos: list[str]) -> dict[str, np.ndarray]:
        arrays = [load_image(p) for p in photos]
        got = pipe.model_inputs(arrays, pipe.detector.detect(arrays))
        return {t: np.ascontiguousarray(np.asarray(got[t][0], dtype=np.float32)) for t in tasks}

    x = inputs(evenly(expand_inputs([args.photos]), args.n))  # as `maskage export` picks its calibration photos
    calib = inputs(evenly(expand_inputs([args.calibration]), args.calibration_limit)) if args.calibration else {}
    for task in tasks:
        np.save(folder / f"{task}.npy", x[task])
        export_onnx(pipe.models[task], folder / f"{task}-float32.onnx")
        shutil.copy(source / task / "model.onnx", folder / f"{task}-shipped.onnx")
        for bits in (8, 7) if calib else ():
            quantize_int8(folder / f"{task}-float32.onnx", folder / f"{task}-int8w{bits}.onnx", calib[task], weight_bits=bits)
    return {t: pipe.models[t].spec for t in tasks}


def second_path(args: argparse.Namespace) -> tuple[list[str] | None, dict[str, str] | None, str]:
    """The command prefix and environment that run the worker on the AVX2 path, and that path's name; None as the
    prefix (and the reason printed) where this machine cannot."""
    if args.via == "avx2_only":
        import avx2_only

        try:
            return [], avx2_only.environment(avx2_only.build()), "AVX2 only"
        except avx2_only.Unavailable as exc:
            print(f"error: {exc}", file=sys.stderr)
            return None, None, ""
    qemu = shutil.which("qemu-x86_64")
    if qemu is None:
        print("error: needs qemu-x86_64 (apt-get install qemu-user)", file=sys.stderr)
        return None, None, ""
    return [qemu, "-cpu", args.cpu], None, f"QEMU {args.cpu}"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pipeline", default=None, help="pipeline folder (default: the shipped one)")
    p.add_argument("--photos", help="photos or a folder of them: their faces are the inputs (required)")
    p.add_argument("--n", type=int, default=48, help="faces to compare")
    p.add_argument("--calibration", default=None, help="photos for re-quantising with 8-bit and 7-bit weights")
    p.add_argument("--calibration-limit", type=int, default=300)
    p.add_argument("--tasks", nargs="+", choices=TASKS, default=list(TASKS), help="the models to compare")
    p.add_argument("--cpu", default="Haswell", help="the CPU QEMU poses as (qemu-x86_64 -cpu help)")
    p.add_argument("--via", choices=("qemu", "avx2_only"), default="qemu",
                   help="how the second path runs: under QEMU (default), or here with AVX-512, VNNI and AMX hidden")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        run_all(Path(args.worker))
        return 0
    if not args.photos:
        p.error("--photos is required")
    worker, env, path_name = second_path(args)
    if worker is None:
        return 2
    print(cpu_line())
    with tempfile.TemporaryDirectory() as tmp:
        here, there = Path(tmp) / "here", Path(tmp) / "there"
        here.mkdir()
        specs = prepare(args, here)
        shutil.copytree(here, there)
        run_all(here)
        done = subprocess.run(worker + [sys.executable, __file__, "--worker", str(there)], stderr=subprocess.PIPE,
                              text=True, env=env)
        if done.returncode:  # QEMU's own warnings (features TCG lacks) are not worth showing otherwise
            print(done.stderr, file=sys.stderr)
            return done.returncode
        print(f"{args.n} faces of {args.photos}; reference: each model's float32 export on this CPU")
        for task in args.tasks:
            ref = softmax(np.load(here / f"{task}-float32.out.npy"), specs[task].heads)
            for out in sorted(here.glob(f"{task}-*.out.npy")):
                name = out.name.removesuffix(".out.npy")
                paths = (("this CPU", here), (path_name, there))
                logits = {where: np.load(folder / out.name) for where, folder in paths}
                probs = {where: softmax(x, specs[task].heads) for where, x in logits.items()}
                for where, prob in probs.items():
                    agree = float((prob.argmax(1) == ref.argmax(1)).mean())
                    line = (f"  {name:<16} {where:<14} "
                            f"max |p - p_float32| {np.abs(prob - ref).max():.4f}  top class agrees {agree:.3f}")
                    if where == path_name:  # the two code paths on the same inputs
                        same = np.array_equal(logits["this CPU"], logits[path_name])
                        gap = np.abs(prob - probs["this CPU"]).max()
                        line += f"  vs this CPU: {'identical' if same else f'max |dp| {gap:.4f}'}"
                    print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
