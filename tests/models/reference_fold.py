"""The user-state update written plainly, one event and one dimension at a time: what the tests
hold the product's one update path (``InterestModel.fold`` and ``replay``, through
``models.fold``) to, bit for bit. The rule is the one of ``models.dimensions``::

    old = norm * decay                                   # float64 (Python floats)
    new = old + |w|                                      # <= 0: no evidence: norm 0, mean unchanged
    mean = float16((float32(mean) * old + w * x) / new)  # numpy takes old, w and new as float32
    norm = float32(new)
"""
from __future__ import annotations

import numpy as np

from models.engine import Event, InterestModel
from models.features import strength, valence
from models.state import DEDUP_WINDOW, UserState, event_key
from tests.models.reference_cooc import plain_update


def plain_state_apply(st: UserState, dims, vectors, item_id, strength, valence, ts, event_id,
                      text_vector=None) -> bool:
    """One event into ``st``: ``vectors`` the item's vector per space, ``text_vector`` (the
    event's review text, encoded) blended into the text spaces. False for a duplicate event id."""
    key = event_key(event_id)
    if key in st.recent:
        return False
    dt = float(ts - st.last_ts) if st.last_ts >= 0 else 0.0
    for d in dims:
        w = d.event_weight(strength, valence)
        decay = d.decay(dt)
        old_norm = st.norm[d.name] * decay
        new_norm = old_norm + abs(w)
        if new_norm <= 0.0:
            st.norm[d.name] = 0.0
            continue
        x = vectors[d.space]
        if text_vector is not None and d.space in ("text", "hybrid"):
            n = text_vector.shape[0]
            x = np.array(x, dtype=np.float32, copy=True)
            x[:n] = 0.5 * (x[:n] + text_vector)
        acc = st.mean[d.name].astype(np.float32) * old_norm + w * x
        st.mean[d.name] = (acc / new_norm).astype(np.float16)
        st.norm[d.name] = float(np.float32(new_norm))
    st.last_ts = max(st.last_ts, int(ts))
    st.events += 1
    st.recent.append(key)
    if len(st.recent) > DEDUP_WINDOW:
        del st.recent[: len(st.recent) - DEDUP_WINDOW]
    st.seen.add(item_id)
    st.weights[item_id] = (strength, valence)  # kept for the recent items (a migration's input)
    return True


def plain_apply(model: InterestModel, st: UserState, ev: Event, feats=None, learn=True) -> bool:
    """One event through the model: the state, and the co-engagement counts for a first
    engagement (unless ``learn`` is False)."""
    items, cooc = model.items, model.cooc
    if ev.item_id not in items:
        raise KeyError(ev.item_id)
    senti, text_vec = (feats or {}).get(ev.text, (None, None)) if ev.text else (None, None)
    first = learn and cooc is not None and ev.item_id not in st.seen
    prev = model.recent_rows(st, cooc.params.span) if first else ()
    applied = plain_state_apply(st, model.dims, items.vectors(items.index[ev.item_id]), ev.item_id,
                                strength(ev.type, ev.value, model.event_weights),
                                valence(ev.type, ev.value, senti), ev.ts, ev.event_id, text_vec)
    if applied and first:
        plain_update(cooc, prev, cooc.index[ev.item_id])
    return applied


def plain_replay(model: InterestModel, events, states, feats=None, on_error=None, learn=None) -> None:
    """Events one at a time into ``states`` (what ``InterestModel.fold`` does)."""
    for ev in events:
        st = states.get(ev.user_id)
        if st is None:
            st = states[ev.user_id] = model.new_state()
        if ev.type == "forget":
            if event_key(ev.event_id) not in st.recent:  # else a retried forget
                states[ev.user_id] = st.forget(event_key(ev.event_id))
            continue
        if on_error is None and ev.item_id not in model.items:
            continue
        if not st.fits(model.dims, model.items.dims):  # a forgotten (or another model's) state
            st = states[ev.user_id] = model.fit(st)
        if on_error is not None:
            try:
                plain_apply(model, st, ev, feats, learn(ev) if learn else True)
            except Exception as exc:
                on_error(ev, exc)
        else:
            plain_apply(model, st, ev, feats, learn(ev) if learn else True)
