"""The offline commands re-execute themselves on the AVX2 kernels of every library
(``models.kernels``), and the libraries then run those kernels; their text vectors are cached apart."""
import json
import os
import subprocess
import sys

import pytest

from models import kernels

PINNABLE = kernels.pinned_env({}) is not None  # an x86-64 CPU with AVX2 (every CI machine)
CHILD = ("import json, os, sys, torch; from models.kernels import numpy_above_avx2; "
         "print(json.dumps({'argv': sys.argv[1:], 'env': dict(os.environ), "
         "'torch': torch.backends.cpu.get_cpu_capability(), 'numpy': numpy_above_avx2()}))")


def clean_env() -> dict:
    drop = {*kernels.PINNED, kernels.MARK, "NPY_DISABLE_CPU_FEATURES", "STREAM_RECO_PIN_KERNELS"}
    return {k: v for k, v in os.environ.items() if k not in drop}


def run(argv: list[str], env: dict) -> dict:
    code = ("import sys; from models.kernels import reexec_pinned; "
            f"reexec_pinned({argv!r}, [sys.executable, '-c', {CHILD!r}]); "
            f"exec({CHILD!r})")  # not re-executed: the same report from this process
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not PINNABLE, reason="not an x86-64 CPU with AVX2")
def test_an_evaluation_runs_on_the_avx2_kernels():
    env = clean_env()
    got = run(["evaluate", "--dataset", "x"], env)
    assert got["argv"] == ["evaluate", "--dataset", "x"]
    assert {k: got["env"].get(k) for k in kernels.PINNED} == kernels.PINNED
    assert got["torch"] == "AVX2"
    assert got["numpy"] == ""  # numpy's kernels above AVX2 are off (the CPU's own, where it has them)


@pytest.mark.skipif(not PINNABLE, reason="not an x86-64 CPU with AVX2")
def test_a_variable_set_by_the_user_is_kept_and_the_worker_is_not_pinned():
    env = clean_env()
    got = run(["train"], {**env, "MKL_CBWR": "COMPATIBLE"})
    assert got["env"]["MKL_CBWR"] == "COMPATIBLE" and got["env"]["OPENBLAS_CORETYPE"] == "Haswell"
    worker = run(["worker"], env)
    assert kernels.MARK not in worker["env"] and "ATEN_CPU_CAPABILITY" not in worker["env"]


def test_turned_off_nothing_is_pinned():
    assert kernels.pinned_env({"STREAM_RECO_PIN_KERNELS": "0"}, machine="x86_64", flags={"avx2", "fma"}) is None
    assert kernels.pinned_env({}, machine="x86_64", flags={"avx", "sse4_2"}) is None
