"""A user state written by another model, made to fit this one; and a list for a user whose
ranking fails. Neither ever drops a user.

A model change (a trained checkpoint after the untrained default, another domain preset, a
retrained checkpoint with other dimensions) changes the dimensions or the sizes of their spaces,
and the interest means a state holds no longer fit. ``migrate`` rebuilds them from what the state
keeps of the user's behaviour: the recent items, oldest first, each folded in once through the
model's own update with the strength and valence of its last event (``UserState.weights``; a
plain engagement of strength 1 where the state predates them), all at the state's last event
time. The bookkeeping carries over as it is: ``events``, the event time, the seen items, the
event-id window, the source offsets and the number of forgets. Items no longer in the catalogue
are left out; with none left (or a forgotten state, which keeps no items) the state starts with
empty interest and keeps its bookkeeping. So a migrated user keeps counting where it was, and is
served at once, by the components that need no interest (co-engagement of its recent items,
popularity, sequence) and by the rebuilt means.

``fallback``: the popularity list (most engaged-with unseen items; catalogue order without
co-engagement counts), for a user whose ranking raised (``stream_app.processor.Processor.fallback``).

>>> import numpy as np
>>> from models.engine import Event, InterestModel
>>> old = InterestModel.untrained(text_dim=2, cf_dim=2)
>>> new = InterestModel.untrained(text_dim=3, cf_dim=2)
>>> for m, v in ((old, [1.0, 0.0]), (new, [1.0, 0.0, 0.0])):
...     _ = m.add_item("a", np.array(v)); _ = m.add_item("b", np.array(v[::-1]))
>>> states = {}
>>> old.fold([Event("u", "a", "rating", 5.0, 1000, "e1")], states)
>>> st = migrate(new, states["u"])
>>> st.fits(new.dims, new.items.dims), st.events, st.seen.recent, st.mean["content"].tolist()
(True, 1, ['a'], [1.0, 0.0, 0.0])
"""
from __future__ import annotations

import logging

import numpy as np

from models.fold import Pending, fold
from models.state import UserState

log = logging.getLogger(__name__)

PLAIN = (1.0, 0.0)  # strength and valence of a recent item whose event is not known


def migrate(model: "InterestModel", state: UserState) -> UserState:
    """A new state that fits ``model``: interest rebuilt from ``state``'s recent items, the
    bookkeeping carried over (module docstring)."""
    out = model.new_state()
    out.last_ts, out.events, out.seen = state.last_ts, state.events, state.seen
    out.recent, out.offsets, out.generation = state.recent, state.offsets, state.generation
    out.weights = dict(state.weights)
    if state.forgotten:
        return out
    try:
        pending, index = [], model.items.index
        for item_id in state.seen.recent:
            row = index.get(item_id)
            if row is not None:  # not retired
                s, v = state.weights.get(item_id, PLAIN)
                if s != s:  # NaN: not known
                    s, v = PLAIN
                pending.append(Pending(out, row, s, v, 0.0))
        if pending:
            fold(model.dims, pending, {s: model.items.space(s) for s in model.items.dims})
    except Exception:  # never lose the user: empty interest, the bookkeeping kept
        log.exception("rebuilding a user state's interest failed; the user starts with empty interest")
        fresh = model.new_state()
        out.mean, out.norm = fresh.mean, fresh.norm
    return out


def fallback(model: "InterestModel", state: UserState, k: int) -> list[tuple[str, float]]:
    """(item, score) of the ``k`` most engaged-with items the user has not seen (popularity by
    the co-engagement counts; catalogue order without them), best first."""
    pop = next((c for c in model.components if c.name == "popularity"), None)
    n = len(model.items.ids)
    s = np.array(pop.scores(state), dtype=np.float64) if pop is not None else -np.arange(n, dtype=np.float64)
    s = np.nan_to_num(s, nan=0.0, posinf=0.0, neginf=0.0)
    top = model._top(s, state, k)
    ids = model.items.ids
    return [(ids[t], round(float(s[t]), 6)) for t in top.tolist()]
