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
from typing import Callable, Iterable, Iterator, Mapping, MutableMapping, NamedTuple, Sequence

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
from models.features import CATEGORY_BUCKETS, category_tokens, category_vector, strength, valence
from models.fold import Pending, event_vectors, fold
from models.items import FREE, ItemVectors
from models.migration import migrate
from models.seen import RECENT_ITEMS
from models.sequence import AttentionSequence, GRUSequence, SequenceMix, load_sequence
from models.state import UserState, event_key
from models.topk import round6, top_k

log = logging.getLogger(__name__)

# ``recommend_many`` ranks at most this many (user, item) cells at once: with many users in a batch
# (a shop: one event per user) and a large catalogue, (B, N) float64 arrays stay ~16 MB each.
RANK_CELLS = 1 << 21


class Event(NamedTuple):
    """One behaviour event, as the model sees it (worker messages and data sets both map to it)."""

    user_id: str
    item_id: str
    type: str  # click | favorite | rating | review | forget
    value: float | None  # the rating, if any
    ts: int  # event time, ms
    event_id: str  # identity for de-duplication
    text: str | None = None  # review / comment text, if any


# text -> (sentiment in [-1, 1], encoder vector); built once per batch (worker) or data set (offline)
TextFeatures = Mapping[str, tuple[float, np.ndarray]]


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


class InterestModel:
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
        self._fixed: list[Component] = [AttentionScores(attention, items)]  # the components but the sequence's
        if cooc is not None:
            reads = max(cooc.params.span, cooc.params.hist_len)
            if reads > RECENT_ITEMS:
                raise ValueError(f"co-engagement reads a user's last {reads} items; a state keeps {RECENT_ITEMS}")
            self._cooc_rows = CoocRows(cooc.add_item(i) if i != FREE else cooc.counts.add_free() for i in items.ids)
            self._fixed += [CoEngagement(cooc, self._cooc_rows, self.recent_rows), Popularity(cooc, self._cooc_rows)]
        self.sequence = sequence
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
    def load(cls, checkpoint: str | Path | None, domain: str | DomainConfig | None = None) -> "InterestModel":
        """A trained checkpoint folder (``stream-app train``), or the untrained default for None.
        A checkpoint keeps the dimensions it was trained with; ``domain``'s event weights apply."""
        if not checkpoint:
            return cls.untrained(domain=domain)
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
        return cls(attention, ItemVectors(sd["text"], sd["cf"], sd["category"], cf_factors=cf), cooc,
                   as_blend(meta.get("blend"), meta.get("blend_gate")), domain=cfg, sequence=seq)

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
        and popularity (with counts), sequence (with a sequence model)."""
        return self._fixed + ([self._sequence_scores] if self._sequence_scores is not None else [])

    @property
    def version(self) -> str:
        return self.attention.version

    # -- catalogue ---------------------------------------------------------------------------
    def add_item(self, item_id: str, text_vector: np.ndarray, categories: Sequence[str] = (),
                 attributes: Mapping | None = None) -> int:
        """Add or update an item -> its row. A new one may take a deleted item's rows, catalogue
        and co-engagement (``models.items``, ``models.cooc.counts``), and inherits nothing."""
        cat = category_vector(category_tokens(categories, attributes), self.items.dims["category"])
        return self.put_item(item_id, text_vector, cat)

    def put_item(self, item_id: str, text_vector: np.ndarray, category: np.ndarray) -> int:
        """``add_item`` from the item's text and category vectors (``models.handover``) -> its row."""
        new = item_id not in self.items
        row = self.items.upsert(item_id, text=text_vector, category=category)
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

    # -- users -------------------------------------------------------------------------------
    def new_state(self) -> UserState:
        return UserState.empty(self.dims, self.items.dims)

    def fit(self, state: UserState) -> UserState:
        """``state`` if it fits the model, else the state migrated to it (``models.migration``)."""
        return state if state.fits(self.dims, self.items.dims) else migrate(self, state)

    def apply(self, state: UserState, ev: Event, text_features: TextFeatures | None = None,
              learn: bool = True) -> bool:
        """``fold`` of one event into a state held by the caller (migrated in place first if it does
        not fit); False for a duplicate event id. KeyError for an unknown or retired item."""
        if not state.fits(self.dims, self.items.dims):
            vars(state).update(vars(migrate(self, state)))
        done = self._advance(state, ev, text_features, learn)
        if done is None:
            return False
        self._commit([done[0]], [] if done[1] is None else [done[1]])
        return True

    def _advance(self, state: UserState, ev: Event, text_features: TextFeatures | None, learn: bool,
                 window: set[int] | None = None) -> tuple[Pending, tuple[list[int], int] | None] | None:
        """All an event does to the state but its norms and means; None for a duplicate, else what
        is left: the event for ``models.fold`` and the co-engagement update (prev rows, row) or
        None. ``window``: a set kept holding every key of ``state.recent`` (a key not in it is no
        duplicate: no scan of the list)."""
        items, cooc = self.items, self.cooc
        if ev.item_id not in items:
            raise KeyError(ev.item_id)
        senti, text_vec = (text_features or {}).get(ev.text, (None, None)) if ev.text else (None, None)
        s, v = strength(ev.type, ev.value, self.event_weights), valence(ev.type, ev.value, senti)
        key = event_key(ev.event_id)
        if (window is None or key in window) and key in state.recent:
            return None
        row = items.index[ev.item_id]
        x = row if text_vec is None else event_vectors(self.dims, items.vectors(row), text_vec)
        prev = self.recent_rows(state, cooc.params.span) if learn and cooc is not None else None
        pending = Pending(state, x, s, v, state.since(ev.ts))
        state.advance(ev.ts, key)
        if window is not None:
            window.add(key)
        first = state.seen.add(ev.item_id)
        state.weights[ev.item_id] = (s, v)
        if len(state.weights) > 4 * RECENT_ITEMS:
            state.trim_weights()
        if first and prev is not None:  # a first engagement
            return pending, (prev, cooc.index[ev.item_id])
        return pending, None

    def replay(self, events: Iterable[Event], states: MutableMapping[str, UserState],
               text_features: TextFeatures | None = None,
               on_error: Callable[[Event, Exception], None] | None = None,
               learn: Callable[[Event], bool] | None = None) -> Iterator[tuple[Event, UserState]]:
        """``fold`` one event at a time, for callers that look at each state before its event
        (the offline evaluation and training score it): for each event, yield (event, the user's
        state *before* it), then fold the event in when the caller asks for the next one.
        Arguments as for ``fold``."""
        for ev in events:
            st = states.get(ev.user_id)
            if st is None or not st.fits(self.dims, self.items.dims):  # new, forgotten, another model's
                st = states[ev.user_id] = self.new_state() if st is None else migrate(self, st)
            yield ev, st
            self.fold((ev,), states, text_features, on_error, learn)

    def fold(self, events: Iterable[Event], states: MutableMapping[str, UserState],
             text_features: TextFeatures | None = None,
             on_error: Callable[[Event, Exception], None] | None = None,
             learn: Callable[[Event], bool] | None = None,
             positions: Sequence[tuple[int, int] | None] | None = None, applied: list[int] | None = None,
             pairs: list | None = None) -> None:
        """The one state update, for the worker's batches and the offline replay: fold ``events``
        into their users' ``states`` (new users start empty; a state that does not fit the model
        is migrated, ``models.migration``; a ``forget`` event replaces the user's state by
        ``UserState.forget``'s record). ``positions[i]``: (source partition, offset) of event i
        or None; an event at or below the last offset its user's state noted for that partition
        is skipped (``UserState.read_at``), so is one whose event id is in the state's window;
        ``applied`` (a list) gets the index of every event folded in. Without ``on_error``,
        events about items not in the catalogue are skipped (offline data sets); with it, such
        an event or any other failure is reported to ``on_error`` and the loop goes on (the
        worker). ``learn(ev)`` False: the event does not update the co-engagement counts.
        ``pairs`` (a list; the worker): the first engagements are not applied to the counts but
        appended to it as ((prev rows, row), event time), in event order, for
        ``CoocModel.deltas`` (the worker's counts learn through Kafka: ``stream_app.cooc_stream``);
        None (``replay``, ``apply``, offline): applied here by ``CoocModel.update_many``. The
        event-by-event part runs in event order (``_advance``), then the co-engagement updates
        in that order and the norms and means of every touched state (``_commit``): nothing
        reads them meanwhile, and the bits are the same whatever the batch boundaries."""
        pending: list[Pending] = []  # norms and means to fold
        engaged: list = []  # co-engagement updates in event order
        times: list[int] = []  # their event times
        windows: dict[int, list] = {}  # by id: a checked state, its window's keys from its second event on
        try:
            for i, ev in enumerate(events):
                st = states.get(ev.user_id)
                if st is None:
                    st = states[ev.user_id] = self.new_state()
                at = positions[i] if positions is not None else None
                if at is not None and not st.read_at(*at):
                    continue  # read again: applied (or forgotten) already
                if ev.type == "forget":
                    key = event_key(ev.event_id)
                    if key not in st.recent:  # else a retried forget
                        states[ev.user_id] = st.forget(key)
                    continue
                if on_error is None and ev.item_id not in self.items:
                    continue
                try:
                    checked = windows.get(id(st))
                    if checked is None:
                        if not st.fits(self.dims, self.items.dims):
                            st = states[ev.user_id] = migrate(self, st)
                        checked = windows[id(st)] = [st, None]
                    elif checked[1] is None:
                        checked[1] = set(st.recent)
                    done = self._advance(st, ev, text_features, learn(ev) if learn else True, checked[1])
                except Exception as exc:  # one bad event never takes its batch down
                    if on_error is None:
                        raise
                    on_error(ev, exc)
                    continue
                if done is not None:
                    pending.append(done[0])
                    if done[1] is not None:
                        engaged.append(done[1])
                        times.append(ev.ts)
                    if applied is not None:
                        applied.append(i)
        finally:  # what was done so far, as event-by-event folding would have left it
            if pairs is not None:
                pairs.extend(zip(engaged, times))
                engaged = []
            self._commit(pending, engaged)

    def _commit(self, pending: Sequence[Pending], engaged: Sequence[tuple[list[int], int]]) -> None:
        """The co-engagement updates (prev rows, row) and then the norms and means of events
        that ``_advance`` took, in event order (the worker's updates go to Kafka instead:
        ``fold``'s ``pairs``)."""
        if engaged:
            self.cooc.update_many(engaged)
        if pending:
            fold(self.dims, pending, {s: self.items.space(s) for s in self.items.dims})

    def recent_rows(self, state: UserState, n: int) -> list[int]:
        """Co-engagement rows of the user's last ``n`` distinct items, newest first."""
        idx = self.cooc.index
        return [r for r in map(idx.get, state.seen.newest(n)) if r is not None]

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
        return combine(self.component_scores(state), self.blend)[0]

    def recommend(self, state: UserState, k: int = 10) -> Recommendation:
        """Top-k unseen items with reasons that sum to each score (``bias``: the item prior and
        the blend's centring) and the weight of every dimension/component (sum 1)."""
        return self.recommend_many([state], k)[0]

    def recommend_many(self, states: Sequence[UserState], k: int = 10) -> list[Recommendation]:
        """``recommend`` for several users (the worker: every user a batch touched). The matrix
        products, the sequence model and the blend run once for all of them; a user's list is the
        same as alone, its scores to float32 rounding (the products are summed in another order).
        A large catalogue is ranked in two stages (``ranking``: ``models.candidates``)."""
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
        return combine_many(raw, self.blend, moments)

    def _top(self, s: np.ndarray, state: UserState, k: int) -> np.ndarray:
        """Rows of the k best of the user's scores ``s`` (N,), its seen and the retired items
        excluded (set to -inf in ``s``)."""
        s[self.seen_rows(state)] = -np.inf
        s[self.items.deleted] = -np.inf
        return top_k(s, k)
