"""The same training and evaluation numbers on any x86-64 CPU: every math library on its AVX2
kernels.

The libraries under the models pick their kernels by CPU. Intel MKL (torch's BLAS) takes its
AVX-512 and AMX paths on recent Intel CPUs and AVX2 on AMD ones; torch's own kernels and oneDNN
the widest vector unit there is; OpenBLAS and numpy a kernel per CPU family. Each kernel sums in
its own order, so the last bits differ: on one CPU, holding MKL, torch or oneDNN to AVX2 each
changes most components of the text encoder's vectors in their last bits, and the choices made
among near-equal candidates on validation (co-engagement parameters, blend weights) can then tip
the other way. ml-latest-small, leave-one-out: fused 0.0836 on two AMD EPYCs, 0.0807 on a Sapphire
Rapids Xeon (every other model equal); on that Xeon with every library on AVX2, fused 0.0817 and
co-engagement alone 0.0731 instead of 0.0743 (BENCHMARKS.md, "Other CPUs").

So ``stream-app train``, ``retrain`` and ``evaluate`` run with each library held to its AVX2
kernels, which every x86-64 server CPU since 2015 has (``PINNED``, and numpy's targets above AVX2
turned off). The libraries read these variables when they load, so the command re-executes itself
once with them set (``reexec_pinned``) before anything loads. A variable already set is kept;
``STREAM_RECO_PIN_KERNELS=0`` (a setting, ``stream_app.settings``) runs on the CPU's own kernels
(faster on AVX-512 machines, numbers of that machine). Elsewhere (another architecture, a CPU
without AVX2 and FMA) nothing is set. The encoder's vector cache keeps the vectors of pinned runs
apart (``TextEncoder.cache_namespace``), so a worker's vectors never enter an evaluation.

>>> env = pinned_env({"PATH": "/bin"}, machine="x86_64", flags={"avx2", "fma"})
>>> env["MKL_CBWR"], env["OPENBLAS_CORETYPE"], env[MARK]
('AVX2', 'Haswell', '1')
>>> pinned_env(env, machine="x86_64", flags={"avx2", "fma"}) is None  # already pinned
True
>>> pinned_env({"STREAM_RECO_PIN_KERNELS": "0"}, machine="x86_64", flags={"avx2", "fma"}) is None
True
>>> pinned_env({}, machine="aarch64", flags=set()) is None
True
"""
from __future__ import annotations

import os
import platform
import sys
from typing import Mapping

PINNED = {
    "MKL_CBWR": "AVX2",  # MKL's conditional numerical reproducibility: its AVX2 code path on every CPU
    "MKL_ENABLE_INSTRUCTIONS": "AVX2",  # and no AVX-512 / AMX dispatch beside it
    "ATEN_CPU_CAPABILITY": "avx2",  # torch's vectorised kernels
    "ONEDNN_MAX_CPU_ISA": "AVX2",  # oneDNN (torch's mkldnn ops)
    "OPENBLAS_CORETYPE": "Haswell",  # numpy's OpenBLAS: its AVX2 kernels (what it picks on AMD Zen)
}  # and numpy's own kernels (sorts, float16 ufuncs, ...): NPY_DISABLE_CPU_FEATURES (``numpy_above_avx2``)
MARK = "STREAM_RECO_KERNELS_PINNED"  # set in the re-executed command: never twice
COMMANDS = ("train", "retrain", "evaluate")


def kernels_pinned() -> bool:
    """Whether this process runs on the pinned kernels (its command re-executed itself)."""
    return bool(os.environ.get(MARK))


def cpu_flags() -> set[str]:
    """The CPU's feature flags (Linux ``/proc/cpuinfo``; empty where it cannot be read)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def numpy_above_avx2() -> str:
    """numpy's dispatch targets beyond AVX2 that this CPU has (numpy 2: ``X86_V4``,
    ``AVX512_ICL``, ``AVX512_SPR``), as ``NPY_DISABLE_CPU_FEATURES`` takes them: numpy refuses
    to start when asked to disable a feature the CPU lacks."""
    try:
        from numpy._core._multiarray_umath import __cpu_dispatch__, __cpu_features__
    except ImportError:  # numpy 1.x
        from numpy.core._multiarray_umath import __cpu_dispatch__, __cpu_features__
    return " ".join(f for f in __cpu_dispatch__ if (f == "X86_V4" or f.startswith("AVX512")) and __cpu_features__.get(f))


def pinned_env(environ: Mapping[str, str], machine: str | None = None, flags: set[str] | None = None) -> dict | None:
    """``environ`` with ``PINNED`` added (a variable set there kept) and ``MARK``, or None when
    nothing is to be done: already pinned, turned off, or not an x86-64 CPU with AVX2 and FMA."""
    if environ.get(MARK) or environ.get("STREAM_RECO_PIN_KERNELS", "1").strip().lower() in ("0", "false", "no"):
        return None
    machine = platform.machine() if machine is None else machine
    flags = cpu_flags() if flags is None else flags
    if machine.lower() not in ("x86_64", "amd64") or not {"avx2", "fma"} <= flags:
        return None
    pinned = dict(PINNED)
    if above := numpy_above_avx2():
        pinned["NPY_DISABLE_CPU_FEATURES"] = above
    return {**pinned, **environ, MARK: "1"}


def reexec_pinned(argv: list[str], program: list[str] | None = None) -> None:
    """Re-execute this command line (``program``, by default ``python -m stream_app.cli``, +
    ``argv``) with ``pinned_env``, when it names one of ``COMMANDS`` and something is to be
    pinned; else return."""
    if not argv or argv[0] not in COMMANDS:
        return
    env = pinned_env(os.environ)
    if env is None:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    program = program or [sys.executable, "-m", "stream_app.cli"]
    os.execve(program[0], [*program, *argv], env)
