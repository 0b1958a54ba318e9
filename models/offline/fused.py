"""The served model as a whole (``fused``: every component, blended), offline form: the same
``InterestModel`` the worker serves, wrapped in the evaluation's ``Recommender`` interface, and
``train_checkpoint``, which writes it for the worker.

``FusedRecommender("fused")`` trains the attention fusion of every dimension
(``models.offline.train_attention``; semantic dimensions over transformer vectors and
collaborative factors side by side), fits the co-engagement counts (``models.cooc``) on the same
training events, and, given the split, ``select`` tunes the co-engagement parameters, trains the
sequence model (by default self-attention and a GRU, mixed: ``models.sequence.mix``; epochs and
mix chosen on a holdout of each user's last training event) and chooses the blend weights on the
validation targets (``models.offline.choose_blend``), then (``gate``) weights by how much behaviour
an item has, on a validation built like the cold-start split (``models.offline.count_gate``).
``warm`` (``models.offline.warm.WarmStart``) starts the attention fusion from a serving
checkpoint's weights and keeps its collaborative factors (``stream-app train --from-kafka
--warm-start``, ``models.offline.retrain``).
``text=False`` drops the transformer's vectors everywhere (semantic dimensions and item tower on
collaborative factors). ``variant(name, mode)`` gives the ablations without retraining: one
attention dimension alone (``only:<dim>``, the other dimensions masked as if empty), the attention
fusion alone (``attention``), the co-engagement dimension alone (``only:cooc``), the sequence
model alone (``only:sequence``), or the blend.
"""
from __future__ import annotations

import copy
import logging
import time
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from models.blend import COMPONENTS
from models.cooc import CoocParams
from models.offline.base import ItemCatalog, Recommender
from models.offline.baselines import _TrainingEvents
from models.offline.choose_blend import record_validation, select_weights
from models.offline.tune_cooc import MAX_PASSES, fit_cooc, tune_cooc
from models.offline.train_sequence import SequenceConfig, sequence_configs, train_best_sequence
from models.offline.protocol import PROTOCOL, Split, replay_evaluate, split_leave_one_out
from models.cf import item_factors, save_factors
from models.offline.data import Dataset, Interaction
from models.offline.loaders import load_dataset
from models.domains import DomainConfig, get_domain
from models.engine import InterestModel, TextFeatures
from models.features import CATEGORY_BUCKETS, item_text
from models.attention import AttentionFusion
from models.items import ItemVectors
from models.state import UserState
from models.offline.train_attention import TrainConfig, build_examples, train_attention
from models.offline.warm import WarmStart, cf_factors as warm_cf_factors, warm_gate

log = logging.getLogger(__name__)

_ENCODER = None
_CACHE = Path.home() / ".cache" / "stream-reco"
_CHOICE: tuple[str, str | None] = ("minilm", None)


def use_encoder(kind: str = "minilm", static_path: str | Path | None = None) -> None:
    """The encoder of every item and event text vector in this process (``stream-app train`` and
    ``evaluate --encoder``; the worker's ``STREAM_RECO_ENCODER``): "minilm" or "static" (its
    folder ``static_path``; None: where ``stream-app distil-encoder`` writes it by default)."""
    global _ENCODER, _CHOICE
    from models.static_encoder import default_static_path

    choice = (kind, str(static_path or default_static_path(_CACHE)) if kind == "static" else None)
    if choice != _CHOICE:
        _ENCODER, _CHOICE = None, choice


def encoder():
    """One shared encoder per process (loading costs seconds); the transformer with an on-disk
    vector cache so evaluation reruns do not re-encode."""
    global _ENCODER
    if _ENCODER is None:
        from models.encoder import build_encoder

        kind, static_path = _CHOICE
        _ENCODER = build_encoder(batch_size=128, threads=1, kind=kind, static_path=static_path,
                                 disk_cache=str(_CACHE / "vectors") if kind == "minilm" else None)
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
    def __init__(self, name: str = "fused", text: bool = True, text_features: Mapping | None = None,
                 item_vectors: np.ndarray | None = None, config: TrainConfig = TrainConfig(), seed: int = 0,
                 cf_dim: int = 64, progress: bool = True, cooc_params: CoocParams | None = None,
                 domain: str | DomainConfig | None = None,
                 sequence: SequenceConfig | Sequence[SequenceConfig] | None = sequence_configs(),
                 warm: WarmStart | None = None, gate: bool = True, encoder_version: str | None = None):
        self.name = name
        self.gate = gate  # blend weights by item engagement count (models.offline.count_gate)
        self.warm = warm  # start from a serving checkpoint (models.offline.warm)
        self.mode = "fused"
        self.domain = get_domain(domain)  # event weights and dimensions, as STREAM_RECO_DOMAIN in the worker
        self.text = text
        self.text_features = dict(text_features or {})
        self.item_vectors = item_vectors
        self.encoder_version = encoder_version  # names item_vectors' encoder (fit: the process's)
        self.config = TrainConfig(**{**config.__dict__, "seed": seed})
        self.cf_dim = cf_dim
        self.progress = progress
        self.cooc_params = cooc_params
        configs = () if sequence is None else (sequence,) if isinstance(sequence, SequenceConfig) else tuple(sequence)
        self.sequence_configs = tuple(SequenceConfig(**{**c.__dict__, "seed": seed}) for c in configs)
        self.sequence = None  # a models.sequence model, trained in select
        self.blend: dict[str, float] | None = None
        self.fixed_blend: dict[str, float] | None = None  # the blend before its count gate
        self.model: InterestModel | None = None
        self.attention: AttentionFusion | None = None
        self.info: dict = {}
        self._cf_ids: list[str] = []
        self._cf: np.ndarray | None = None
        self._given: dict = {}  # reports of the selection steps run elsewhere (``provide``)

    def fit(self, train: Sequence[Interaction], items: ItemCatalog, counts: bool = True) -> None:
        """Train the attention fusion; ``counts``: also fit the co-engagement counts now (else
        ``select`` fits them, once their parameters are chosen)."""
        if self.item_vectors is None and self.text:
            self.encoder_version = encoder().version
        text_vecs = self.item_vectors if self.item_vectors is not None else item_text_vectors(items)
        self._text_vecs = text_vecs
        dims = self.domain.dims("hybrid" if self.text else "cf")
        self._warm_check(dims, text_vecs.shape[1])
        if self.warm is not None:  # the factors the warm weights were learned on; new items from their text
            self._cf_ids, self._cf, new = warm_cf_factors(items.ids, text_vecs, self.warm.cf)
            self.info["warm_cf_new_items"] = new
        else:
            self._cf_ids, self._cf = item_factors(((e.user_id, e.item_id) for e in train), k=self.cf_dim,
                                                  seed=self.config.seed)
        cf = dict(zip(self._cf_ids, self._cf))
        space = {"text": text_vecs.shape[1], "cf": self._cf.shape[1], "category": CATEGORY_BUCKETS,
                 "hybrid": text_vecs.shape[1] + self._cf.shape[1]}
        model = InterestModel(AttentionFusion.default(dims, space),
                              ItemVectors(space["text"], space["cf"], space["category"], cf_factors=cf), domain=self.domain)
        for i, item_id in enumerate(items.ids):  # catalogue order = score order
            it = items.item(i)
            model.add_item(item_id, text_vecs[i], it.categories, it.attributes, it.published_ts)
        events = sorted(train, key=lambda e: e.ts)
        train_ex, holdout = build_examples(model, events, self.text_features, progress=self.progress)
        cfg = self.config
        if len(items) > 5000:  # the catalogue-wide softmax dominates the cost: larger steps
            cfg = TrainConfig(**{**cfg.__dict__, "batch_size": 1024, "lr": cfg.lr * 1.5})
        item_spaces = ("text", "category", "cf") if self.text else ("category", "cf")
        self.attention, info = train_attention(model, train_ex, holdout, cfg, self.name, item_spaces=item_spaces,
                                               progress=self.progress,
                                               init=self.warm.attention if self.warm is not None else None)
        self.info = {**info, **({"warm_cf_new_items": self.info["warm_cf_new_items"]} if self.warm else {})}
        self._train_events = list(train)
        self._catalog = items
        self._cooc = fit_cooc(train, items, self.cooc_params or CoocParams()) if counts else None
        self.model = InterestModel(self.attention, model.items, self._cooc and self._cooc.with_params(self._cooc.params),
                                   self.blend, domain=self.domain)
        self._reset()

    def provide(self, cooc: tuple[CoocParams, dict] | None, sequence) -> None:
        """The results of the selection steps that do not need this model, computed elsewhere (in
        parallel, ``models.offline.staged``): the co-engagement search's (params, report), unless
        the parameters were given, and the trained sequence model (or None); ``select`` then
        skips those steps."""
        if cooc is not None:
            self.cooc_params, self._given["cooc"] = cooc
            self._cooc = None
        self.sequence = sequence
        self._given["sequence"] = {k: v for k, v in sequence.info.items() if k != "config"} if sequence else None

    def _sequence_init(self):
        """With a warm start whose checkpoint has a sequence model: what starts the new one from it."""
        if self.warm is None or self.warm.sequence is None:
            return None
        from models.offline.warm_sequence import init_sequence

        served, ids, text = self.warm.sequence, self._catalog.ids, self._text_vecs
        return lambda module, kind: init_sequence(module, kind, served, ids, text)

    def _warm_check(self, dims, text_dim: int) -> None:
        """Drop a warm start whose checkpoint does not fit this model (logged): start from scratch."""
        if self.warm is None:
            return
        cf_dim = len(next(iter(self.warm.cf.values()))) if self.warm.cf else self.cf_dim
        space = {"text": text_dim, "cf": cf_dim, "category": CATEGORY_BUCKETS}
        spaces = ("text", "category", "cf") if self.text else ("category", "cf")
        why = self.warm.compatible(dims, space, self.config.d_model, self.config.d_attn, spaces)
        if why is not None:
            log.warning("warm start from %s not possible (%s): training from scratch", self.warm.version, why)
            self.warm = None

    def select(self, split: Split, budget_s: float | None = None, max_passes: int = MAX_PASSES) -> dict:
        """Validation only: tune the co-engagement parameters (unless given or ``provide``d; at
        most ``max_passes``, ``budget_s`` an opt-in seconds cap), train the sequence model (unless
        ``provide``d; epochs in its config), then choose the blend weights and (``gate``) their
        gate by item engagement count. Test targets are never ranked."""
        report: dict = {k: v for k, v in self._given.items() if v is not None}
        if self.cooc_params is None:
            self.cooc_params, report["cooc"] = tune_cooc(split, self._catalog, budget_s, max_passes=max_passes)
            self._cooc = None
        if self._cooc is None or self._cooc.params != self.cooc_params:
            self.fit_counts(self.cooc_params)
        if self.sequence_configs and "sequence" not in self._given:
            self.sequence = train_best_sequence(self._train_events, split, self._catalog, self.sequence_configs,
                                                init=self._sequence_init())
            if self.sequence is not None:
                report["sequence"] = {k: v for k, v in self.sequence.info.items() if k != "config"}
        probe = self.variant(self.name, "fused")
        probe.model.blend = None
        names = self.blend_names()
        P: list = []
        Z, M, T = record_validation(probe.learn_one, probe.components, names, split, self._catalog, raw=P,
                                    moments=probe.model.own_moments)
        self.blend, report["blend"] = select_weights(Z, M, T, names)
        self.fixed_blend = self.blend
        if self.gate and self.warm is not None:  # warm: the served gate, around the blend just chosen
            self.blend, report["gate"] = warm_gate(self.warm, self.blend)
        elif self.gate:  # weights by the item's engagement count, on a validation with new items
            from models.offline.count_gate import select_gate

            P = np.stack(P) if P else np.zeros(M.shape, np.float32)
            self.blend, report["gate"] = select_gate(self, split, (Z, M, T, P, names))
        self.model = InterestModel(self.attention, self.model.items, self._cooc.with_params(self.cooc_params), self.blend,
                                   domain=self.domain, sequence=self.sequence)
        self._reset()
        self.info["selection"] = report
        return report

    def fit_counts(self, params: CoocParams) -> None:
        """The co-engagement counts of the training events with ``params`` (as ``select`` fits them)."""
        self.cooc_params = params
        self._cooc = fit_cooc(self._train_events, self._catalog, params)

    def variant(self, name: str, mode: str) -> "FusedRecommender":
        """The same trained model, fresh user states and fresh copies of the fitted counts;
        ``mode``: fused | fused-fixed (the blend without its count gate) | attention | only:cooc |
        only:sequence | only:<dimension>."""
        v = copy.copy(self)
        v.name, v.mode = name, mode
        blend = {"fused": self.blend, "fused-fixed": self.fixed_blend}.get(mode)  # fixed: without the count gate
        uses_cooc = mode in ("fused", "fused-fixed", "only:cooc")
        cooc = self._cooc.with_params(self._cooc.params) if uses_cooc else None
        seq = self.sequence if mode in ("fused", "fused-fixed", "only:sequence") else None
        v.model = InterestModel(self.attention, self.model.items, cooc, blend,
                                domain=self.domain, sequence=seq)
        v._reset()
        return v

    def sharing_state(self, modes: Sequence[str]) -> list["FusedRecommender"]:
        """Variants (``variant``) in ``modes`` that score the attention fusion alone (attention,
        only:<dimension>), over one user state: events are learned by the first
        (``models.offline.protocol.replay_evaluate_shared``)."""
        if any(m != "attention" and not m.startswith("only:") or m in ("only:cooc", "only:sequence") for m in modes):
            raise ValueError(f"only attention-only modes share a state, not {list(modes)}")
        vs = [self.variant(m, m) for m in modes]
        for v in vs[1:]:
            v._states = vs[0]._states
        return vs

    def _reset(self) -> None:
        self._states: dict[str, UserState] = {}
        self._events = 0
        self._guard = _TrainingEvents(self._train_events)

    def learn_one(self, ev: Interaction) -> None:
        """Replay one event through the served update; a training event does not count twice in
        the co-engagement counts (they were fitted on it)."""
        self._events += 1
        learn = not self._guard.consume(ev)
        self.model.fold([ev.event(f"live-{self._events}")], self._states, self.text_features, learn=lambda e: learn)

    def blend_names(self) -> list[str]:
        """The components a blend is chosen over: the sequence where one is trained, freshness
        where the domain's items go stale and some item has a publishing time (else it is
        constant)."""
        fresh = bool(self.domain.freshness_half_life_days) and any(
            it.published_ts is not None for it in self._catalog.items)
        return [c for c in COMPONENTS if (c != "sequence" or self.sequence is not None) and (c != "freshness" or fresh)]

    def components(self, user_id: str) -> dict[str, np.ndarray]:
        return self.model.component_scores(self._states.get(user_id) or self.model.new_state())

    def score(self, user_id: str) -> np.ndarray:
        st = self._states.get(user_id) or self.model.new_state()
        if self.mode in ("fused", "fused-fixed"):
            return self.model.scores(st)
        if self.mode == "only:cooc":
            return self.model.component_scores(st)["co-engagement"]
        if self.mode == "only:sequence":
            return self.model.component_scores(st)["sequence"]
        dims = None if self.mode == "attention" else [self.mode.split(":", 1)[1]]  # only:<dim>: the others empty
        norm = st.norm if dims is None else {n: (v if n in dims else 0.0) for n, v in st.norm.items()}
        return self.attention.scores(st.mean, norm, self.model.items)

    def state(self, user_id: str) -> UserState | None:
        return self._states.get(user_id)

    def save(self, out_dir: str | Path) -> Path:
        """A checkpoint the worker loads with STREAM_RECO_CHECKPOINT=<folder>: attention weights,
        config and blend weights (config.json), CF factors (cf.npz), co-engagement counts and
        parameters (cooc.npz), as the counts stand now, and the sequence model (sequence.npz)."""
        out = self.attention.save(out_dir, extra={"training": self.info, "train_config": self.config.__dict__,
                                               "blend": self.blend, "domain": self.domain.name,
                                               "encoder": self.encoder_version,
                                               "blend_gate": getattr(self.blend, "config", lambda: None)()})
        save_factors(out / "cf.npz", self._cf_ids, self._cf)
        if self.model.cooc is not None:
            self.model.cooc.save(out / "cooc.npz")
        if self.model.sequence is not None:
            self.model.sequence.save(out / "sequence.npz")
        return out


def train_checkpoint(dataset: str | Path, out: str | Path, seed: int = 0, budget_s: float | None = None,
                     progress: bool = True, domain: str = "default", sequence_budget_s: float | None = None,
                     sequence_kind: str = "auto", max_passes: int = MAX_PASSES,
                     sequence_epochs: int | None = None) -> Path:
    """``stream-app train``: exactly the model ``stream-app evaluate`` measures as ``fused``: the
    attention fusion and the co-engagement counts fitted on the training part of the
    leave-one-out split, co-engagement parameters and blend weights chosen on its validation
    targets; then the whole log is replayed through the served update, so the counts stand where
    a worker that had streamed the log would have them. That replay is the evaluation protocol's,
    so the checkpoint records its own measured quality (``measured`` in config.json: test and
    validation NDCG@10 / Recall@10 of this very model). Writes a versioned checkpoint folder.
    ``budget_s`` / ``sequence_budget_s``: opt-in seconds caps (off by default: the same model on
    any machine)."""
    ds = load_dataset(dataset)
    catalog = ItemCatalog.from_dataset(ds)
    split = split_leave_one_out(ds)
    rec = FusedRecommender("fused", text_features=dataset_text_features(ds), seed=seed, progress=progress,
                           domain=domain, sequence=sequence_configs(sequence_kind, sequence_budget_s, sequence_epochs))
    rec.fit(split.train, catalog)
    rec.select(split, budget_s, max_passes)
    m = replay_evaluate(rec, split, catalog, k=10, progress=progress, measure=("valid", "test"))
    rec.info["measured"] = {"dataset": ds.name, "protocol": PROTOCOL,
                            **{k: m[k] for k in ("ndcg@10", "recall@10", "valid_ndcg@10", "valid_recall@10",
                                                 "n_test", "n_valid")}}
    version = f"fusion-{ds.name}-{time.strftime('%Y%m%d%H%M%S')}-s{seed}"
    rec.attention.version = version
    path = rec.save(Path(out) / version)
    log.info("wrote checkpoint %s", path)
    print(path)
    return path
