"""The interest model as one object: the catalogue, the dimensions and the blend's components.

This is the single code path for "event in, top-K out". The stream worker and the offline
evaluation both call ``add_item``, ``fold`` (``replay``: one event at a time) and ``recommend``
on it, so what is measured offline is what is served. The model owns the catalogue (``items``);
a ``UserState`` only ever receives the vectors of the item an event is about.

>>> import numpy as np
>>> model = InterestModel.untrained(text_dim=2, cf_dim=2)
>>> _ = model.add_item("a", np.array([1.0, 0.0])); _ = model.add_item("b", np.array([0.9, 0.1]))
>>> _ = model.add_item("c", np.array([0.0, 1.0]))
>>> states = {}
>>> for _ in model.replay([Event("u1", "a", "rating", 5.0, 1000, "e1")], states):
...     pass
>>> [r.item_id for r in model.recommend(states["u1"], k=2).items]
['b', 'c']
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import orjson

from models.attention import AttentionFusion
from models.blend import as_blend, combine, combine_many
from models.candidates import TwoStage, ranked_lists
from models.cf import load_factors
from models.components import AttentionScores, CoEngagement, CoocRows, Component, Popularity, SequenceScores
from models.cooc import CoocModel
from models.dimensions import Dimension
from models.domains import DomainConfig, get_domain
from models.encoder import MODEL_NAME
from models.features import CATEGORY_BUCKETS, category_tokens, category_vector
from models.freshness import DAY_MS, Freshness
from models.folding import Event, EventFolding, TextFeatures  # noqa: F401 (re-exported)
from models.items import FREE, ItemVectors
from models.migration import migrate
from models.seen import RECENT_ITEMS
from models.sequence import AttentionSequence, GRUSequence, SequenceMix, load_sequence
from models.state import UserState
from models.topk import round6, top_k

log = logging.getLogger(__name__)

# ``recommend_many`` ranks at most this many (user, item) cells at once: with many users in a batch
# (a shop: one event per user) and a large catalogue, (B, N) float64 arrays stay ~16 MB each.
RANK_CELLS = 1 << 21



class EncoderMismatch(ValueError):
    """A model's item text vectors come from another encoder than the one that would add to them."""


def encoder_kind(version: str) -> str:
    """The ``STREAM_RECO_ENCODER`` value whose vectors ``version`` names (``models.encoder``)."""
    return "static" if "/model2vec-" in version else "minilm"


@dataclass
class Ranked:
    item_id: str
    score: float
    reasons: dict[str, float]  # dimension -> contribution to the score


@dataclass
class Recommendation:
    items: list[Ranked]
    dimension_weights: dict[str, float]
    model_version: str


class InterestModel(EventFolding):
    """``attention``: the attention fusion of the dimensions (``models.attention``); ``cooc``: the
    co-engagement counts (updated from every new event); ``sequence``: the model of the user's
    last items in order (``models.sequence``: self-attention, a GRU or a mix of them); ``blend``:
    component -> weight of the final z-score blend (``models.blend``) of ``components``
    (``models.components``); without a blend the attention score alone is served. ``domain`` (a
    preset name of ``models.domains`` or a config; None: ``default``) sets the strength of each
    event type; the dimensions are the attention fusion's (``untrained`` takes them from the
    domain, a trained checkpoint keeps its own)."""

    def __init__(self, attention: AttentionFusion, items: ItemVectors, cooc: CoocModel | None = None,
                 blend: Mapping[str, float] | None = None, domain: str | DomainConfig | None = None,
                 sequence: GRUSequence | AttentionSequence | SequenceMix | None = None):
        self.attention = attention
        self.dims: tuple[Dimension, ...] = attention.cfg.dims
        self.items = items
        self.dim_names = [d.name for d in self.dims]
        self.domain = get_domain(domain)
        self.event_weights = dict(self.domain.event_weights)
        self.cooc = cooc
        self.blend = as_blend(blend)  # a dict, a GatedBlend (by item engagement count) or None
        self._cooc_rows = CoocRows()  # catalogue row -> co-engagement row
        self._untrained: tuple = (None, -1, np.zeros(0, dtype=bool))  # (model, catalogue version, ``untrained_rows``)
        self._fixed: list[Component] = [AttentionScores(attention, items)]  # the components but the sequence's
        if cooc is not None:
            reads = max(cooc.params.span, cooc.params.hist_len)
            if reads > RECENT_ITEMS:
                raise ValueError(f"co-engagement reads a user's last {reads} items; a state keeps {RECENT_ITEMS}")
            self._cooc_rows = CoocRows(cooc.add_item(i) if i != FREE else cooc.counts.add_free() for i in items.ids)
            self._fixed += [CoEngagement(cooc, self._cooc_rows, self.recent_rows), Popularity(cooc, self._cooc_rows)]
        half_life = self.domain.freshness_half_life_days
        self.freshness = Freshness(items, half_life * DAY_MS) if half_life else None  # items go stale
        if self.freshness is not None:
            self._fixed.append(self.freshness)
        self.sequence = sequence
        self.encoder: str | None = None  # the encoder of the item text vectors (None: untrained, any)
        self.ranking = TwoStage(self)  # exact or two-stage ranking (mode "auto": by catalogue size)
        if sequence is not None and sequence.window > RECENT_ITEMS:
            raise ValueError(f"the sequence model reads a user's last {sequence.window} items; a state keeps {RECENT_ITEMS}")

    @classmethod
    def untrained(cls, text_dim: int = 384, cf_dim: int = 64,
                  domain: str | DomainConfig | None = None) -> "InterestModel":
        space = {"text": text_dim, "cf": cf_dim, "category": CATEGORY_BUCKETS, "hybrid": text_dim + cf_dim}
        cfg = get_domain(domain)
        return cls(AttentionFusion.default(cfg.dims(), space), ItemVectors(text_dim, cf_dim, CATEGORY_BUCKETS),
                   domain=cfg)

    @classmethod
    def load(cls, checkpoint: str | Path | None, domain: str | DomainConfig | None = None,
             text_dim: int = 384) -> "InterestModel":
        """A trained checkpoint folder (``stream-app train``), or the untrained default for None
        (over text vectors of ``text_dim``). A checkpoint keeps the dimensions it was trained with
        and names the encoder of its text vectors (``encoder``; one without the name was trained
        on all-MiniLM-L6-v2's); ``domain``'s event weights apply."""
        if not checkpoint:
            return cls.untrained(text_dim=text_dim, domain=domain)
        path = Path(checkpoint)
        attention = AttentionFusion.load(path)
        sd = attention.cfg.space_dims
        cf = load_factors(path / "cf.npz") if (path / "cf.npz").exists() else {}
        cfg = get_domain(domain)
        meta = orjson.loads((path / "config.json").read_bytes())
        if meta.get("domain", "default") != cfg.name:
            log.warning("checkpoint %s was trained with domain %r, serving with domain %r",
                        attention.version, meta.get("domain", "default"), cfg.name)
        cooc = CoocModel.load(path / "cooc.npz") if (path / "cooc.npz").exists() else None
        seq = load_sequence(path / "sequence.npz") if (path / "sequence.npz").exists() else None
        model = cls(attention, ItemVectors(sd["text"], sd["cf"], sd["category"], cf_factors=cf), cooc,
                    as_blend(meta.get("blend"), meta.get("blend_gate")), domain=cfg, sequence=seq)
        model.encoder = meta.get("encoder") or MODEL_NAME
        return model

    def check_encoder(self, version: str, dim: int) -> None:
        """Raise ``EncoderMismatch`` unless item text vectors of the encoder ``version`` (of size
        ``dim``) may join this model's: the vectors of two encoders never share one catalogue."""
        if self.encoder is not None and self.encoder != version:
            raise EncoderMismatch(
                f"model {self.version} was trained on item text vectors of encoder {self.encoder!r}; this worker "
                f"encodes with {version!r}: vectors of two encoders cannot share one catalogue. Serve it with "
                f"STREAM_RECO_ENCODER={encoder_kind(self.encoder)}, or train one with --encoder {encoder_kind(version)}")
        if self.items.dims["text"] != dim:
            raise EncoderMismatch(f"model {self.version} holds text vectors of size {self.items.dims['text']}; "
                                  f"encoder {version!r} gives {dim}")

    @property
    def sequence(self) -> GRUSequence | AttentionSequence | SequenceMix | None:
        return self._sequence

    @sequence.setter
    def sequence(self, model: GRUSequence | AttentionSequence | SequenceMix | None) -> None:
        self._sequence = model
        self._sequence_scores = None if model is None else SequenceScores(model, self.items)

    @property
    def components(self) -> list[Component]:
        """The blend's components in ``models.blend.COMPONENTS`` order: attention, co-engagement
        and popularity (with counts), freshness (in a domain whose items go stale), sequence (with
        a sequence model)."""
        return self._fixed + ([self._sequence_scores] if self._sequence_scores is not None else [])

    @property
    def version(self) -> str:
        return self.attention.version

    # -- catalogue ---------------------------------------------------------------------------
    def add_item(self, item_id: str, text_vector: np.ndarray, categories: Sequence[str] = (),
                 attributes: Mapping | None = None, published_ts: float | None = None) -> int:
        """Add or update an item -> its row. A new one may take a deleted item's rows, catalogue
        and co-engagement (``models.items``, ``models.cooc.counts``), and inherits nothing.
        ``published_ts``: its publishing time, ms (``models.freshness``)."""
        cat = category_vector(category_tokens(categories, attributes), self.items.dims["category"])
        return self.put_item(item_id, text_vector, cat, published_ts)

    def put_item(self, item_id: str, text_vector: np.ndarray, category: np.ndarray,
                 published_ts: float | None = None) -> int:
        """``add_item`` from the item's text and category vectors (``models.handover``) -> its row."""
        new = item_id not in self.items
        row = self.items.upsert(item_id, text=text_vector, category=category, published_ts=published_ts)
        if self.cooc is not None and new:
            self._cooc_rows.set(row, self.cooc.add_item(item_id))
        return row

    def delete_item(self, item_id: str) -> bool:
        """Retire an item and free its catalogue row and co-engagement counts (also those of an id
        known from training only). A state that still lists it keeps working: an id without a
        row is skipped (``recent_rows``, ``seen_rows``). False if it was not live."""
        if self.cooc is not None:
            self.cooc.free_item(item_id)  # its online row too (models.cooc.rows)
        return self.items.delete(item_id)

    def untrained_rows(self) -> np.ndarray:
        """(N,) bool: the catalogue rows of items the trained model does not know (neither a learned
        id of the attention fusion nor a word of the sequence model's vocabulary: items added by
        a catalogue event after training). Kept by catalogue version: a change looks up only the
        rows it wrote (``ItemVectors.changed_since``). All False for a model that learned no ids
        (nothing tells its items apart)."""
        seq, items = self._sequence, self.items
        key = (id(self.attention), id(seq), id(items))
        cached, version, rows = self._untrained
        if cached != key:
            version, rows = -1, np.zeros(0, dtype=bool)
        if version != items.version or rows.size != len(items.ids):
            known, vocab = self.attention._id_row, (seq.index if seq is not None else {})
            ids = items.ids
            out = np.zeros(len(ids), dtype=bool)
            if known or vocab:
                keep = min(rows.size, out.size)
                out[:keep] = rows[:keep]
                redo = items.changed_since(version)
                out[redo] = [ids[r] not in known and ids[r] not in vocab for r in redo.tolist()]
            self._untrained = (key, items.version, out)
        return self._untrained[2]

    def gated_untrained(self) -> np.ndarray | None:
        """``untrained_rows`` when the blend has a bucket for them, else None (nothing to look up)."""
        return self.untrained_rows() if getattr(self.blend, "untrained", None) is not None else None

    # -- users -------------------------------------------------------------------------------
    def new_state(self) -> UserState:
        return UserState.empty(self.dims, self.items.dims)

    def fit(self, state: UserState) -> UserState:
        """``state`` if it fits the model, else the state migrated to it (``models.migration``)."""
        return state if state.fits(self.dims, self.items.dims) else migrate(self, state)

    def recent_rows(self, state: UserState, n: int) -> list[int]:
        """Co-engagement rows of the user's last ``n`` distinct items, newest first."""
        return self.cooc_rows(state.seen.newest(n))

    def cooc_rows(self, item_ids: Sequence[str]) -> list[int]:
        """Co-engagement rows of ``item_ids`` in order, those without one left out."""
        idx = self.cooc.index
        return [r for r in map(idx.get, item_ids) if r is not None]

    def seen_rows(self, state: UserState) -> np.ndarray:
        """Catalogue rows of the items the user has seen: exactly its recent items, by hash the
        older ones (``models.seen``: a rare unseen item may be among them)."""
        mask = state.seen.hashed_mask(self.items.keys())
        idx = self.items.index
        mask[[idx[i] for i in state.seen.recent if i in idx]] = True
        return np.flatnonzero(mask)

    # -- ranking -----------------------------------------------------------------------------
    def component_scores(self, state: UserState) -> dict[str, np.ndarray]:
        """Raw (N,) score of every blend component in ``items.ids`` order."""
        return {c.name: c.scores(state) for c in self.components}

    def scores(self, state: UserState) -> np.ndarray:
        """(N,) scores over the catalogue in ``items.ids`` order (seen items not yet excluded)."""
        if self.blend is None:
            return self._fixed[0].scores(state)
        return combine(self.component_scores(state), self.blend, self.own_moments(),
                       untrained=self.gated_untrained())[0]

    def own_moments(self) -> dict[str, tuple[float, float]]:
        """The (mean, std) the blend z-scores a component with where they are not those of its
        whole row (``models.freshness``: items not out yet do not count)."""
        return {c.name: c.moments() for c in self.components if c.own_moments}

    def recommend(self, state: UserState, k: int = 10) -> Recommendation:
        """Top-k unseen items with reasons that sum to each score (``bias``: the item prior and
        the blend's centring) and the weight of every dimension/component (sum 1)."""
        return self.recommend_many([state], k)[0]

    def recommend_many(self, states: Sequence[UserState], k: int = 10) -> list[Recommendation]:
        """``recommend`` for several users (the worker: every user a batch touched). The matrix
        products, the sequence model and the blend run once for all of them; a user's list is the
        same as alone, its scores to float32 rounding (the products are summed in another order).
        A large catalogue is ranked in two stages (``ranking``: ``models.candidates``)."""
        with self._fixed[0].held():
            lists = self.ranking.recommend_many(states, k) if self.ranking.active() else self._exact(states, k)
        return [Recommendation([Ranked(*r) for r in items], weights, self.version) for items, weights in lists]

    def _exact(self, states: Sequence[UserState], k: int) -> list[tuple[list, dict]]:
        """Every catalogue item scored for every user (``models.candidates.ranked_lists``' form)."""
        step = max(1, RANK_CELLS // max(1, len(self.items.ids)))  # users per pass: bounded (B, N) arrays
        if len(states) > step:
            return [r for i in range(0, len(states), step) for r in self._exact(states[i:i + step], k)]
        if not states:
            return []
        ranked = self._ranked()
        raw = {c.name: c.scores_many(states) for c in ranked}  # (B, N) each
        S, scale, offset = self._blend(ranked, raw)  # (B, N); (B,) per component
        tops = [self._top(S[i], st, k) for i, st in enumerate(states)]
        return ranked_lists(self, states, ranked, raw, S, scale, offset, tops)

    def _ranked(self) -> list[Component]:
        """The components a ranking computes: all but a costly one the blend gives no weight;
        without a blend, the attention alone."""
        if self.blend is None:
            return self._fixed[:1]
        return [c for c in self.components if not c.skipped_unweighted or self.blend.get(c.name)]

    def _blend(self, ranked: list[Component], raw: Mapping[str, np.ndarray]):
        """-> (score (B, N), a new array; scale and offset per component, (B,) each): the blend,
        or without one the attention score as it is."""
        if self.blend is None:
            att = raw["attention"]
            return att.astype(np.float64), {"attention": np.ones(len(att))}, {"attention": np.zeros(len(att))}
        moments = {c.name: m for c in ranked if (m := c.moments()) is not None}
        return combine_many(raw, self.blend, moments, self.gated_untrained())

    def _top(self, s: np.ndarray, state: UserState, k: int) -> np.ndarray:
        """Rows of the k best of the user's scores ``s`` (N,), its seen and the retired items
        excluded (set to -inf in ``s``)."""
        s[self.seen_rows(state)] = -np.inf
        s[self.items.deleted] = -np.inf
        return top_k(s, k)
