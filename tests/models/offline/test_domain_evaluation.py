"""Each domain preset end to end offline: a generated data set, the evaluation library with the
fused model built for that domain, finite metrics, and the fusion ahead of popularity.

No external data (the data sets are generated into tmp_path); about 5-15 s per domain on 2 cores.
"""
from __future__ import annotations

import json
import math

import pytest

from models.domains import DOMAINS
from models.offline.evaluate import run_evaluation
from models.offline.synthetic import GENERATED, generate

MODELS = ["pop", "itemknn", "fused"]
METRICS = ("ndcg@10", "recall@10", "prequential_hit@10", "valid_ndcg@10")


@pytest.mark.timeout(300)
@pytest.mark.parametrize("name", sorted(GENERATED))
def test_domain_evaluation_runs_and_fusion_beats_popularity(name, tmp_path):
    folder = generate(name, tmp_path / name, seed=0)
    # default TrainConfig: on 150 items the fusion trains in about 2 s (early stopping)
    metrics = run_evaluation(folder, tmp_path / "out", seed=0, only=MODELS, progress=False, domain=name)
    models = metrics["models"]
    assert sorted(models) == sorted(MODELS)
    for model, m in models.items():
        for key in METRICS:
            assert math.isfinite(m[key]) and 0.0 <= m[key] <= 1.0, (model, key, m[key])
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["domain"] == name
    weights = models["fused"]["mean_dimension_weights"]
    assert set(DOMAINS[name].dimensions) <= set(weights) and math.isclose(sum(weights.values()), 1.0, abs_tol=1e-3)
    ndcg = {model: round(m["ndcg@10"], 4) for model, m in models.items()}
    # Seeds 0-3 gave fused/pop NDCG@10 of about 0.17/0.09 (ecommerce), 0.18/0.10 (news),
    # 0.22/0.14 (video): the learned fusion is ahead of popularity in every domain.
    assert ndcg["fused"] > ndcg["pop"], ndcg
