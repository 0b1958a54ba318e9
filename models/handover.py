"""A freshly loaded model made ready to take over from the one serving: the same catalogue, the
same co-engagement rows learned online.

A checkpoint (``InterestModel.load``) holds trained weights, CF factors and co-engagement counts,
but no catalogue: a worker's catalogue comes from the catalogue changelog, item by item, and the
rows learned online from the rows changelog (``stream_app.cooc_stream``). A model loaded while a
worker runs gets both from the model it replaces:

1. ``snapshot`` (in the thread that owns the serving model, cheap: a copy of the live rows' text
   and category vectors) and ``adopt`` (anywhere: the new model is nobody else's yet) give the new
   model every live item, each row's vectors as the serving model holds them, its CF factors from
   the new checkpoint;
2. ``hand_over`` (in the owning thread, at the moment of the switch) brings the new model up to
   what changed since the snapshot (items added, changed or deleted: compared by content, only
   when the catalogue changed at all) and carries the online co-engagement rows over by item id
   (``models.cooc.online.carry_rows``).

An id the new checkpoint's co-engagement counts know that is neither a live item nor known to the
serving model's counts was deleted here (or never was in this catalogue): its counts are freed, as
a restart replaying the catalogue's deletions would.

>>> import numpy as np
>>> from models.engine import InterestModel
>>> old, new = InterestModel.untrained(text_dim=2, cf_dim=2), InterestModel.untrained(text_dim=2, cf_dim=2)
>>> _ = old.add_item("a", np.array([1.0, 0.0])); _ = old.add_item("b", np.array([0.0, 1.0]))
>>> adopt(new, snapshot(old))
2
>>> _ = old.add_item("c", np.array([0.6, 0.8])); _ = old.delete_item("a")  # while it loaded
>>> hand_over(old, new)["changed"], sorted(new.items.index)
(2, ['b', 'c'])
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Catalogue:
    """The live items of a model at one moment: ids, and their rows' text and category vectors
    (copies), with the catalogue's ``version`` then."""

    ids: list[str]
    text: np.ndarray  # (n, text dim)
    category: np.ndarray  # (n, category dim)
    version: int
    published: np.ndarray | None = None  # (n,) publishing times, ms (NaN: unknown)


def snapshot(model) -> Catalogue:
    """The live items of ``model`` (an ``InterestModel``), copied."""
    items = model.items
    ids = list(items.index)
    rows = np.fromiter(items.index.values(), dtype=np.int64, count=len(ids))
    return Catalogue(ids, items.space("text")[rows].copy(), items.space("category")[rows].copy(), items.version,
                     items.published[rows].copy())


def _time(p: float) -> float | None:
    """A publishing time as ``put_item`` takes it (NaN: None)."""
    return None if np.isnan(p) else float(p)


def check_fits(new, cat: Catalogue) -> None:
    """ValueError when ``new`` cannot hold the catalogue's vectors (another text encoder size,
    another number of category buckets)."""
    want = {"text": cat.text.shape[1], "category": cat.category.shape[1]}
    have = {k: new.items.dims[k] for k in want}
    if want != have:
        raise ValueError(f"the new model's item spaces {have} do not fit the catalogue's {want}")


def adopt(new, cat: Catalogue) -> int:
    """Every item of ``cat`` into ``new``; how many."""
    check_fits(new, cat)
    published = cat.published if cat.published is not None else np.full(len(cat.ids), np.nan)
    for i, item_id in enumerate(cat.ids):
        new.put_item(item_id, cat.text[i], cat.category[i], _time(published[i]))
    return len(cat.ids)


def catch_up(old, new) -> int:
    """Make ``new``'s live items those of ``old``, with ``old``'s vectors: added, changed and
    deleted items compared by content; how many items changed."""
    live = old.items.index
    gone = [i for i in new.items.index if i not in live]
    for item_id in gone:
        new.delete_item(item_id)
    both = [i for i in live if i in new.items.index]
    missing = [i for i in live if i not in new.items.index]
    changed = list(missing)
    if both:
        o = np.fromiter((live[i] for i in both), dtype=np.int64, count=len(both))
        n = np.fromiter((new.items.index[i] for i in both), dtype=np.int64, count=len(both))
        po, pn = old.items.published[o], new.items.published[n]
        differ = (np.any(old.items.space("text")[o] != new.items.space("text")[n], axis=1)
                  | np.any(old.items.space("category")[o] != new.items.space("category")[n], axis=1)
                  | ((po != pn) & ~(np.isnan(po) & np.isnan(pn))))
        changed += [both[j] for j in np.flatnonzero(differ).tolist()]
    text, category, published = old.items.space("text"), old.items.space("category"), old.items.published
    for item_id in changed:
        r = live[item_id]
        new.put_item(item_id, text[r], category[r], _time(published[r]))
    return len(gone) + len(changed)


def free_unknown(old, new) -> int:
    """Free the co-engagement counts of ids ``new`` knows from training only that are neither
    live items nor known to ``old``'s counts (deleted here); how many."""
    if new.cooc is None:
        return 0
    known = old.cooc.index if old.cooc is not None else {}
    stale = [i for i in new.cooc.index if i not in new.items.index and i not in known]
    for item_id in stale:
        new.cooc.free_item(item_id)
    return len(stale)


def hand_over(old, new, snapshot_version: int | None = None, half_life_ms: float | None = None) -> dict:
    """At the switch, in the thread that owns ``old``: ``new`` brought up to ``old``'s catalogue
    (skipped when ``snapshot_version`` says it has not changed since ``adopt``), the ids deleted
    here freed, the online co-engagement rows carried over (``half_life_ms``: their decay when
    ``old`` had no counts to take it from), the event time reached (``models.freshness``). Returns
    what was done."""
    from models.cooc.online import carry_rows

    changed = 0 if snapshot_version == old.items.version else catch_up(old, new)
    freed = free_unknown(old, new)
    rows = 0
    if new.cooc is not None:
        if old.cooc is not None:
            rows = carry_rows(old.cooc, new.cooc)
        elif half_life_ms is not None:
            new.cooc.online.half_life_ms = half_life_ms
    if new.freshness is not None and old.freshness is not None:
        new.freshness.observe(old.freshness.now)  # the event time reached so far
    return {"changed": changed, "freed": freed, "rows": rows}
