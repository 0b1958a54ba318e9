"""The gate between a retrained model and the workers: publish only what beats what serves.

``decide`` compares the new model's and the serving model's figure on the recent slice
(``models.offline.recent``; ``metric`` is ``ndcg@10`` or ``hr@10``): the new model passes only when
it ranked at least ``min_ranked`` events and its figure exceeds the serving one by more than
``margin`` (absolute). Without a serving figure (nothing published, no checkpoint configured)
there is nothing to beat but the untrained default, which ``serving_model`` builds, so a
comparison is always made.

``serving_model`` is the model a worker serving ``checkpoint`` would hold once it had read the
catalogue: the checkpoint (or the untrained default for None) with every live item added from
its text vector, categories and attributes, as the catalogue indexer adds them.

>>> decide({"ndcg@10": 0.12, "n_ranked": 500}, {"ndcg@10": 0.10, "n_ranked": 500}).publish
True
>>> d = decide({"ndcg@10": 0.10, "n_ranked": 500}, {"ndcg@10": 0.10, "n_ranked": 500}); d.publish, d.reason
(False, 'ndcg@10 0.1000 does not beat the serving 0.1000 by more than 0.0000')
>>> decide({"hr@10": 0.3, "n_ranked": 5}, {"hr@10": 0.1}, metric="hr@10").publish  # too few to judge
False
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import orjson

from models.engine import InterestModel
from models.offline.base import ItemCatalog
from models.registry import METADATA

METRICS = ("ndcg@10", "hr@10")


@dataclass(frozen=True)
class Decision:
    publish: bool
    reason: str
    metric: str
    margin: float
    new: float
    serving: float

    def to_dict(self) -> dict:
        return asdict(self)


def decide(new: dict, serving: dict, metric: str = "ndcg@10", margin: float = 0.0, min_ranked: int = 20) -> Decision:
    """Publish the new model? See the module doc."""
    if metric not in METRICS:
        raise ValueError(f"gate metric must be one of {METRICS}, not {metric!r}")
    a, b = float(new.get(metric, float("nan"))), float(serving.get(metric, float("nan")))

    def done(ok: bool, why: str) -> Decision:
        return Decision(ok, why, metric, margin, a, b)

    if new.get("n_ranked", 0) < min_ranked:
        return done(False, f"only {new.get('n_ranked', 0)} recent events ranked (fewer than {min_ranked}): "
                           "too few to judge")
    if math.isnan(a):
        return done(False, f"the new model has no {metric}")
    if math.isnan(b):
        return done(True, f"{metric} {a:.4f}; the serving model has no figure")
    if a > b + margin:
        return done(True, f"{metric} {a:.4f} beats the serving {b:.4f} by more than {margin:.4f}")
    return done(False, f"{metric} {a:.4f} does not beat the serving {b:.4f} by more than {margin:.4f}")


def serving_model(checkpoint: str | Path | None, catalog: ItemCatalog, item_vectors: np.ndarray,
                  domain: str = "default", encoder: str | None = None) -> InterestModel:
    """The serving model with the live catalogue (see the module doc), whose vectors ``item_vectors``
    are of the encoder ``encoder`` (``models.engine.EncoderMismatch`` when the checkpoint's are not)."""
    model = InterestModel.load(checkpoint, domain=domain, text_dim=item_vectors.shape[1])
    if encoder is not None:
        model.check_encoder(encoder, item_vectors.shape[1])
    for i, item_id in enumerate(catalog.ids):
        it = catalog.item(i)
        model.add_item(item_id, item_vectors[i], it.categories, it.attributes, it.published_ts)
    return model


def trained_through(checkpoint: str | Path | None) -> int | None:
    """The newest event time a checkpoint written by a retrain has folded into its co-engagement
    counts (its ``retrain.json``), or None when unknown (a checkpoint from ``stream-app train
    --dataset``, or none)."""
    if not checkpoint:
        return None
    path = Path(checkpoint) / METADATA
    if not path.is_file():
        return None
    return orjson.loads(path.read_bytes()).get("data", {}).get("last_event_ts")


def checkpoint_version(checkpoint: str | Path | None) -> str | None:
    """The version a checkpoint folder names in its config.json (None: the untrained default)."""
    if not checkpoint:
        return None
    return orjson.loads((Path(checkpoint) / "config.json").read_bytes()).get("version")
