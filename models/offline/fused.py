"""The fused multi-dimension recommender, offline form: the same ``InterestModel`` the worker
serves, wrapped in the evaluation's ``Recommender`` interface.

``FusedRecommender("fused")`` uses every dimension of its domain (``models.domains``; the
``default`` domain has all five), its semantic ones (content, sentiment, recency) over
transformer vectors and collaborative factors side by side; ``dims=("content",)`` gives the
single-dimension ablations ("only:content", ...); ``text=False`` drops the transformer's vectors
everywhere (semantic dimensions and item tower on collaborative factors). ``domain`` also sets
the event weights, exactly as ``STREAM_RECO_DOMAIN`` does in the worker.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from models.offline.base import ItemCatalog, Recommender
from models.cf import item_factors, save_factors
from models.offline.data import Dataset, Interaction
from models.offline.loaders import load_dataset
from models.domains import DomainConfig, get_domain
from models.engine import InterestModel, TextFeatures
from models.features import CATEGORY_BUCKETS, item_text
from models.scorer import FusedScorer
from models.items import ItemVectors
from models.state import UserState
from models.offline.train import TrainConfig, build_examples, train_fusion

log = logging.getLogger(__name__)

_ENCODER = None


def encoder():
    """One shared transformer encoder per process (loading costs seconds), with an on-disk
    vector cache so evaluation reruns do not re-encode."""
    global _ENCODER
    if _ENCODER is None:
        from models.encoder import build_encoder

        _ENCODER = build_encoder(batch_size=128, threads=1,
                                 disk_cache=str(Path.home() / ".cache" / "stream-reco" / "vectors"))
    return _ENCODER


def item_text_vectors(catalog: ItemCatalog) -> np.ndarray:
    """(N, 384) encoder vectors of the items' text (``models.features.item_text``), in catalogue order."""
    return encoder().encode([item_text(it.title, it.text, it.categories) for it in catalog.items])


def dataset_text_features(ds: Dataset) -> TextFeatures:
    """Sentiment and encoder vector of every distinct event text (reviews, comments, tags)."""
    from models.features import TextSentiment

    texts = sorted({ev.text for ev in ds.interactions if ev.text})
    if not texts:
        return {}
    senti = TextSentiment()
    vecs = encoder().encode(texts)
    return {t: (senti(t), v) for t, v in zip(texts, vecs)}


class FusedRecommender(Recommender):
    def __init__(self, name: str = "fused", dims: Sequence[str] | None = None, text: bool = True,
                 text_features: Mapping | None = None, item_vectors: np.ndarray | None = None,
                 config: TrainConfig = TrainConfig(), seed: int = 0, cf_dim: int = 64, progress: bool = True,
                 domain: str | DomainConfig | None = None):
        self.name = name
        self.domain = get_domain(domain)
        self.text = text
        self.dim_filter = tuple(dims) if dims else None
        self.text_features = dict(text_features or {})
        self.item_vectors = item_vectors
        self.config = TrainConfig(**{**config.__dict__, "seed": seed})
        self.cf_dim = cf_dim
        self.progress = progress
        self.model: InterestModel | None = None
        self.scorer: FusedScorer | None = None
        self.info: dict = {}
        self._states: dict[str, UserState] = {}
        self._events = 0
        self._cf_ids: list[str] = []
        self._cf: np.ndarray | None = None

    def _dims(self):
        dims = self.domain.dims("hybrid" if self.text else "cf")
        if self.dim_filter:
            dims = tuple(d for d in dims if d.name in self.dim_filter)
        return dims

    def fit(self, train: Sequence[Interaction], items: ItemCatalog) -> None:
        self._cf_ids, self._cf = item_factors(((e.user_id, e.item_id) for e in train), k=self.cf_dim,
                                              seed=self.config.seed)
        cf = dict(zip(self._cf_ids, self._cf))
        text_vecs = self.item_vectors if self.item_vectors is not None else item_text_vectors(items)
        dims = self._dims()
        space = {"text": text_vecs.shape[1], "cf": self._cf.shape[1], "category": CATEGORY_BUCKETS,
                 "hybrid": text_vecs.shape[1] + self._cf.shape[1]}
        model = InterestModel(FusedScorer.default(dims, space),
                              ItemVectors(space["text"], space["cf"], space["category"], cf_factors=cf), self.domain)
        for i, item_id in enumerate(items.ids):  # catalogue order = score order
            it = items.item(i)
            model.add_item(item_id, text_vecs[i], it.categories, it.attributes)
        events = sorted(train, key=lambda e: e.ts)
        train_ex, holdout = build_examples(model, events, self.text_features, progress=self.progress)
        cfg = self.config
        if len(items) > 5000:  # the catalogue-wide softmax dominates the cost: subsample, larger steps
            cfg = TrainConfig(**{**cfg.__dict__, "batch_size": 1024, "lr": cfg.lr * 1.5,
                                 "max_examples": min(cfg.max_examples, 40_000)})
        item_spaces = ("text", "category", "cf") if self.text else ("category", "cf")
        self.scorer, self.info = train_fusion(model, train_ex, holdout, cfg, self.name,
                                              item_spaces=item_spaces, progress=self.progress)
        self.model = InterestModel(self.scorer, model.items, self.domain)
        self._states = {}

    def learn_one(self, ev: Interaction) -> None:
        self._events += 1
        for _ in self.model.replay([ev.event(f"live-{self._events}")], self._states, self.text_features):
            pass

    def score(self, user_id: str) -> np.ndarray:
        st = self._states.get(user_id) or self.model.new_state()
        return self.model.scores(st)

    def state(self, user_id: str) -> UserState | None:
        return self._states.get(user_id)

    def save(self, out_dir: str | Path) -> Path:
        """A checkpoint the worker loads with STREAM_RECO_CHECKPOINT=<folder>."""
        out = self.scorer.save(out_dir, extra={"training": self.info, "train_config": self.config.__dict__,
                                               "domain": self.domain.name})
        save_factors(out / "cf.npz", self._cf_ids, self._cf)
        return out


def train_checkpoint(dataset: str | Path, out: str | Path, seed: int = 0, domain: str = "default") -> Path:
    """``stream-app train``: fit CF factors and the fusion on the whole log; write a versioned
    checkpoint folder (fusion weights, config, CF factors, the domain's name) that the worker
    loads by setting. Serve it with the same ``STREAM_RECO_DOMAIN`` (the worker warns otherwise)."""

    ds = load_dataset(dataset)
    catalog = ItemCatalog.from_dataset(ds)
    events = sorted(ds.interactions, key=lambda e: e.ts)
    rec = FusedRecommender("fused", text_features=dataset_text_features(ds), seed=seed, domain=domain)
    rec.fit(events, catalog)
    version = f"fusion-{ds.name}-{time.strftime('%Y%m%d%H%M%S')}-s{seed}"
    if rec.domain.name != "default":
        version += f"-{rec.domain.name}"
    rec.scorer.version = version
    path = rec.save(Path(out) / version)
    log.info("wrote checkpoint %s", path)
    print(path)
    return path
