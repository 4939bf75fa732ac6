"""Run a command as on a CPU with AVX2 and FMA but no AVX-512, VNNI or AMX, at this CPU's speed.

    python benchmarks/avx2_only.py -- python benchmarks/speed.py --n 128 --rounds 3

Builds `avx2_only.c` (gcc, once, into ~/.cache/maskage) and preloads it into the command: the CPUID instruction
then reports no AVX-512, VNNI or AMX, so ONNX Runtime, PyTorch, NumPy and OpenBLAS pick the kernels such a CPU
runs (a Haswell-class Intel, an AMD EPYC before Zen 4). Speed figures taken so show which kernels a model's time
depends on, not another CPU's clock or caches. Needs Linux's CPUID faulting (flag ``cpuid_fault``, x86-64 Linux
4.12 and later, under KVM too). Run scripts under it, not pytest: pytest's faulthandler takes over the signal the
preload answers CPUID with. `machine.cpu_line()` names the hidden flags beside every figure.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

from machine import AVX2_ONLY_ENV  # a sibling module: this folder is on sys.path wherever these scripts run

SOURCE = Path(__file__).with_name("avx2_only.c")


class Unavailable(RuntimeError):
    """This machine cannot hide CPU features (not x86-64 Linux, no CPUID faulting, no C compiler)."""


def build(cache: Path | None = None) -> Path:
    """The preload library, compiled from ``avx2_only.c`` unless a build of the same source is cached."""
    if not Path("/proc/cpuinfo").exists() or "cpuid_fault" not in Path("/proc/cpuinfo").read_text():
        raise Unavailable("this machine has no CPUID faulting (flag cpuid_fault in /proc/cpuinfo)")
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        raise Unavailable("no C compiler (gcc or cc) on PATH")
    digest = hashlib.sha1(SOURCE.read_bytes()).hexdigest()[:12]
    cache = cache or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "maskage"
    lib = cache / f"avx2_only-{digest}.so"
    if not lib.exists():
        cache.mkdir(parents=True, exist_ok=True)
        tmp = lib.with_suffix(f".{os.getpid()}.tmp")
        subprocess.run([cc, "-O2", "-shared", "-fPIC", "-o", str(tmp), str(SOURCE)], check=True)
        tmp.replace(lib)
    # the flag can be listed where the kernel still refuses (some hypervisors): the preload then exits with 3
    probe = subprocess.run([sys.executable, "-c", "pass"], env=environment(lib), capture_output=True, text=True)
    if probe.returncode:
        raise Unavailable(probe.stderr.strip() or f"the preload failed (exit {probe.returncode})")
    return lib


def environment(lib: Path, base: dict[str, str] | None = None) -> dict[str, str]:
    """``base`` (default: this process's environment) with the library preloaded and ``AVX2_ONLY_ENV`` set, which
    ``machine.cpu_line()`` reports beside every figure."""
    env = dict(os.environ if base is None else base)
    env["LD_PRELOAD"] = " ".join(p for p in (str(lib), env.get("LD_PRELOAD", "")) if p)
    env[AVX2_ONLY_ENV] = "1"
    return env


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", nargs=argparse.REMAINDER, help="the command to run, after --")
    args = p.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        p.error("give a command to run, after --")
    try:
        lib = build()
    except Unavailable as exc:
        print(f"avx2_only: {exc}", file=sys.stderr)
        return 2
    os.execvpe(command[0], command, environment(lib))
    return 0  # not reached


if __name__ == "__main__":
    raise SystemExit(main())
