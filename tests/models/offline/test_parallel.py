"""Parallel evaluation gives exactly the serial run's figures (both protocols), and every
training stops after a fixed number of epochs or passes unless a seconds cap is asked for, which
the report then names."""
from __future__ import annotations

import json

import pytest

from models.offline.evaluate import run_evaluation
from models.offline.synthetic import generate

MODELS = ["pop", "itemknn", "only:cooc", "only:sequence", "attention", "fused", "fused-no-text"]


def _without_seconds(x):
    """Everything but the wall-clock measurements."""
    if isinstance(x, dict):
        return {k: _without_seconds(v) for k, v in x.items() if "seconds" not in k}
    if isinstance(x, list):
        return [_without_seconds(v) for v in x]
    return x


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return generate("ecommerce", tmp_path_factory.mktemp("data"), seed=0, n_users=60, n_items=40, n_events=700)


@pytest.mark.timeout(600)
@pytest.mark.parametrize("protocol", ["leave-one-out", "cold-start"])
def test_parallel_jobs_give_the_serial_figures(folder, tmp_path, protocol):
    models = [m for m in MODELS if protocol == "leave-one-out" or m != "fused-no-text"]
    runs = {}
    for jobs in (1, 2):
        out = tmp_path / f"jobs{jobs}"
        run_evaluation(folder, out, seed=0, only=models, progress=False, jobs=jobs, sequence_epochs=2, max_passes=1,
                       protocol=protocol)
        runs[jobs] = json.loads((out / "metrics.json").read_text())
        assert json.loads((out / "summary.json").read_text())["stopped_by_time"] == []
    assert sorted(runs[1]["models"]) == sorted(models)
    assert _without_seconds(runs[1]) == _without_seconds(runs[2])
    assert runs[1]["models"]["fused"]["ndcg@10"] > 0
