"""Events into user states: the one state update, for the worker's batches and the offline replay.

``EventFolding`` is the half of ``models.engine.InterestModel`` that takes behaviour in: ``fold``
(a batch, in event order), ``replay`` (one event at a time, for callers that look at each state
before its event) and ``apply`` (one event into a state the caller holds). The incremental rules
are in ``models.fold`` and ``models.dimensions``; the ranking half is ``models.engine``.
"""
from __future__ import annotations

from typing import Callable, Iterable, Iterator, Mapping, MutableMapping, NamedTuple, Sequence

import numpy as np

from models.features import strength, valence
from models.fold import Pending, event_vectors, fold
from models.migration import migrate
from models.seen import RECENT_ITEMS
from models.state import UserState, event_key

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

class EventFolding:
    """``fold``, ``replay`` and ``apply`` of ``InterestModel`` (which provides ``items``, ``dims``,
    ``cooc``, ``event_weights``, ``new_state``, ``cooc_rows`` and ``freshness``)."""

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
        prev = state.seen.newest(cooc.params.span) if learn and cooc is not None else None  # ids
        pending = Pending(state, x, s, v, state.since(ev.ts))
        state.advance(ev.ts, key)
        if self.freshness is not None:
            self.freshness.observe(ev.ts)
        if window is not None:
            window.add(key)
        first = state.seen.add(ev.item_id)
        state.weights[ev.item_id] = (s, v)
        if len(state.weights) > 4 * RECENT_ITEMS:
            state.trim_weights()
        if first and prev is not None:  # a first engagement: its rows (only then, most events repeat)
            return pending, (self.cooc_rows(prev), cooc.index[ev.item_id])
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
            fold(self.dims, pending, self.items.row_spaces())

