"""Seeded synthetic stand-in for a small e-commerce review data set.

Shape (mirrors the unseen data set the fused model lost on): ~2,000 users, 420 items in 4
unrelated categories (105 each), ~12k ratings with short review text, day-level timestamps
with many same-day ties, a third of the items without descriptive text, ratings 1-5.

Structure a recommender can exploit:

* **co-purchase bundles**: each category is cut into bundles of 5 items; after buying an item
  a user often buys another item of the same bundle (symmetric co-occurrence);
* **directed follow-ups**: every item has one "accessory" item (a fixed random item of the
  same category) that tends to be bought *after* it (item-to-item transition, sequence order);
* **category loyalty**: a user mostly shops in one category, sometimes a second one;
* **popularity skew** (Zipf) inside each category;
* a few **repeat purchases** (the protocol ignores re-consumption, but they are in the log).

Timestamps are whole days (ms at 00:00 UTC); ~40% of a user's consecutive events fall on the
same day, and the file is globally shuffled before writing, so the loader's stable sort keeps a
*random* order among same-day events (as in review dumps whose order carries no meaning).

Usage::

    python -m models.offline.synth_ecom runs/data/synth-ecom   # writes items.jsonl, interactions.jsonl
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

DAY_MS = 86_400_000
CATEGORIES = ("Kitchen", "Garden Tools", "Pet Supplies", "Office Paper")
WORDS = {
    "Kitchen": ["pan", "knife", "spatula", "pot", "blender", "grater", "whisk", "kettle"],
    "Garden Tools": ["hose", "rake", "shears", "trowel", "sprinkler", "gloves", "pruner", "spade"],
    "Pet Supplies": ["leash", "collar", "bowl", "litter", "treats", "brush", "harness", "toy"],
    "Office Paper": ["notebook", "envelope", "printer paper", "labels", "folder", "sticky notes", "binder", "cardstock"],
}
GOOD = ["great", "works well", "love it", "good value", "sturdy", "as described", "recommended"]
BAD = ["broke quickly", "poor quality", "not as pictured", "too small", "returned it", "meh"]


def generate(out_dir: str | Path, n_users: int = 2000, n_items: int = 420, seed: int = 0,
             mean_events: float = 6.0, p_bundle: float = 0.35, p_follow: float = 0.30,
             p_other_cat: float = 0.08, p_same_day: float = 0.4, p_repeat: float = 0.03,
             text_fraction: float = 2 / 3) -> dict:
    """Write ``items.jsonl`` and ``interactions.jsonl`` (the generic layout of ``models/data.py``)
    under ``out_dir`` and return a small summary dict. Deterministic for a given ``seed``."""
    rng = np.random.default_rng(seed)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    n_cat = len(CATEGORIES)
    per_cat = n_items // n_cat
    cat_of = np.repeat(np.arange(n_cat), per_cat)
    n_items = len(cat_of)
    members = [np.flatnonzero(cat_of == c) for c in range(n_cat)]
    # Zipf popularity inside each category (random permutation so ids carry no rank).
    pop = np.zeros(n_items)
    for c in range(n_cat):
        ranks = rng.permutation(per_cat) + 1
        pop[members[c]] = 1.0 / ranks ** 0.9
    # Bundles of 5 consecutive (shuffled) items inside a category.
    bundle_of = np.zeros(n_items, dtype=np.int64)
    b = 0
    for c in range(n_cat):
        perm = rng.permutation(members[c])
        for start in range(0, per_cat, 5):
            bundle_of[perm[start:start + 5]] = b
            b += 1
    bundles = [np.flatnonzero(bundle_of == k) for k in range(b)]
    # One directed follow-up item per item (same category, not itself).
    follow = np.array([rng.choice(members[cat_of[i]][members[cat_of[i]] != i]) for i in range(n_items)])

    item_ids = [f"P{1000 + i}" for i in range(n_items)]
    has_text = rng.random(n_items) < text_fraction
    _write_items(out, rng, cat_of, item_ids, has_text)

    def draw(c: int, exclude: set) -> int:
        p = pop[members[c]].copy()
        for j in exclude:
            if cat_of[j] == c:
                p[np.searchsorted(members[c], j)] = 0.0
        if p.sum() <= 0:
            return int(rng.choice(members[c]))
        return int(rng.choice(members[c], p=p / p.sum()))

    rows = []
    for u in range(n_users):
        n_ev = 3 + rng.geometric(1.0 / max(mean_events - 2.0, 1.01)) - 1
        n_ev = int(min(n_ev, 60))
        home = int(rng.choice(n_cat, p=[0.35, 0.25, 0.25, 0.15]))
        second = int(rng.choice([c for c in range(n_cat) if c != home]))
        day = int(rng.integers(0, 3 * 365))
        bought: list[int] = []
        for _ in range(n_ev):
            r = rng.random()
            item = None
            if bought and r < p_repeat:
                item = int(rng.choice(bought))
            elif bought and r < p_repeat + p_follow:
                cand = int(follow[bought[-1]])
                item = cand if cand not in bought else None
            elif bought and r < p_repeat + p_follow + p_bundle:
                src = bought[-1] if rng.random() < 0.7 else int(rng.choice(bought))
                cand = [j for j in bundles[bundle_of[src]] if j not in bought]
                item = int(rng.choice(cand)) if cand else None
            if item is None:
                c = home if rng.random() > p_other_cat else second
                item = draw(c, set(bought))
            bought.append(item)
            liked = rng.random() < 0.8
            rating = int(rng.choice([4, 5], p=[0.4, 0.6])) if liked else int(rng.choice([1, 2, 3]))
            w = WORDS[CATEGORIES[cat_of[item]]][int(rng.integers(8))]
            text = f"{rng.choice(GOOD if liked else BAD)}, the {w}"
            rows.append({"user_id": f"U{u}", "item_id": item_ids[item], "ts": day * DAY_MS, "type": "rating",
                         "rating": rating, "text": text})
            if rng.random() >= p_same_day:
                day += int(rng.geometric(0.08))
    order = rng.permutation(len(rows))  # same-day events of a user end up in random order
    (out / "interactions.jsonl").write_text("".join(json.dumps(rows[k]) + "\n" for k in order), encoding="utf-8")
    return {"users": n_users, "items": n_items, "events": len(rows), "items_without_text": int((~has_text).sum())}


def _write_items(out: Path, rng: np.random.Generator, cat_of: np.ndarray, item_ids: list[str],
                 has_text: np.ndarray) -> None:
    """items.jsonl: category, price, and a descriptive title/text for the items that have text."""
    with (out / "items.jsonl").open("w", encoding="utf-8") as f:
        for i in range(len(item_ids)):
            cat = CATEGORIES[cat_of[i]]
            rec = {"item_id": item_ids[i], "categories": [cat], "attributes": {"price": round(float(rng.uniform(3, 80)), 2)}}
            if has_text[i]:
                w = WORDS[cat][i % len(WORDS[cat])]
                rec["title"] = f"{cat} {w} model {i}"
                rec["text"] = f"{cat}: {w}, {rng.choice(['durable', 'compact', 'deluxe', 'basic'])} edition."
            else:
                rec["title"] = item_ids[i]  # bare product code: no descriptive text
            f.write(json.dumps(rec) + "\n")


if __name__ == "__main__":
    target = sys.argv[1] if len(sys.argv) > 1 else "runs/data/synth-ecom"
    print(generate(target))
