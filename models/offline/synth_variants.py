"""Seeded stand-in for a review dump whose reviews are copied onto every variant of a product.

Large public review dumps list a product's variants (sizes, colours, denominations, print or
digital) as separate items, and many of them show a review on every variant: the same user, day,
rating and text appear once per variant. After a 5-core filter, small categories consist mostly of
such copies. This generator writes that shape in the generic JSONL layout (``models.offline.data``):

* 4 unrelated categories with 31 / 85 / 148 / 157 items before filtering, grouped into parent
  products of 1-12 variants (fashion sizes, beauty shades, gift-card designs, magazine formats);
* ~2,200 users, each mostly in one category, reviewing a few parent products on different days;
  a review lands on every variant of its product with probability ``p_copy``, else on one or two;
  the next product reviewed is often (``p_complement``) one of two complements of the last one;
* day-level timestamps (all copies of a review share one); ratings 1-5 with short review text;
* a third of the items without descriptive text (a bare product code as title);
* an iterative 5-core filter (users and items with >= 5 events), as such dumps are published.

``ties``: how the rows of one user and day are ordered in the file, which is the order the
project's stable time sort keeps: ``"id"`` (rows sorted by item id within a day, as dumps sorted by
product code are: the same order for every user of a product) or ``"random"``.

Usage::

    python -m models.offline.synth_variants runs/data/synth-variants [--ties id|random]
"""
from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

import numpy as np

DAY_MS = 86_400_000
# category: (items, users drawn, variants per parent: low, high, mean reviews per user)
CATEGORIES = {
    "Fashion": (31, 500, 3, 12, 1.2),
    "Beauty": (85, 1500, 2, 6, 1.5),
    "Gift Cards": (148, 800, 1, 8, 1.8),
    "Magazines": (157, 900, 1, 3, 3.0),
}
GOOD = ["great", "works well", "love it", "good value", "as described", "recommended", "perfect gift"]
BAD = ["poor quality", "not as pictured", "wrong size", "returned it", "meh", "never arrived"]


def _parents(rng: np.random.Generator, n_items: int, low: int, high: int) -> list[list[int]]:
    """Cut ``n_items`` item positions into parent products of ``low..high`` variants."""
    out, start = [], 0
    while start < n_items:
        k = int(min(rng.integers(low, high + 1), n_items - start))
        out.append(list(range(start, start + k)))
        start += k
    return out


def generate(out_dir: str | Path, seed: int = 0, ties: str = "id", p_copy: float = 0.5, p_complement: float = 0.4,
             p_other_cat: float = 0.05, text_fraction: float = 2 / 3, core: int = 5) -> dict:
    """Write ``items.jsonl`` and ``interactions.jsonl`` under ``out_dir``; return a summary."""
    if ties not in ("id", "random"):
        raise ValueError(f"ties must be 'id' or 'random', not {ties!r}")
    rng = np.random.default_rng(seed)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    items: list[dict] = []  # position -> {id, cat, parent}
    parents: list[tuple[str, list[int], np.ndarray]] = []  # (category, item positions, weight)
    codes = rng.permutation(900_000)[: sum(v[0] for v in CATEGORIES.values())] + 100_000
    for cat, (n, _, low, high, _) in CATEGORIES.items():
        base = len(items)
        for group in _parents(rng, n, low, high):
            pos = [base + g for g in group]
            parents.append((cat, pos, np.ones(1)))
            for p in pos:
                items.append({"id": f"B0{codes[p]:07d}", "cat": cat, "parent": len(parents) - 1})
    by_cat = {c: [k for k, p in enumerate(parents) if p[0] == c] for c in CATEGORIES}
    weight = {c: 1.0 / (rng.permutation(len(ks)) + 1) ** 1.1 for c, ks in by_cat.items()}  # Zipf over parents
    # two complementary products per product (same category), often reviewed next
    comp = {k: [int(x) for x in rng.choice(by_cat[p[0]], size=2)] for k, p in enumerate(parents)}

    rows: list[dict] = []
    uid = 0
    for cat, (_, n_users, _, _, mean_reviews) in CATEGORIES.items():
        for _ in range(n_users):  # before the 5-core filter
            day = int(rng.integers(0, 4 * 365))
            n_reviews = int(rng.geometric(1.0 / mean_reviews))
            done: list[int] = []
            for _ in range(n_reviews):
                c = cat if rng.random() > p_other_cat else str(rng.choice(list(CATEGORIES)))
                w = weight[c] / weight[c].sum()
                k = int(by_cat[c][int(rng.choice(len(w), p=w))])
                if done and rng.random() < p_complement:
                    k = comp[done[-1]][int(rng.integers(2))]
                if k in done:
                    continue
                done.append(k)
                pos = parents[k][1]
                if rng.random() >= p_copy and len(pos) > 1:  # the review shows on one or two variants
                    pos = list(rng.choice(pos, size=min(len(pos), int(rng.integers(1, 3))), replace=False))
                liked = rng.random() < 0.8
                rating = int(rng.choice([4, 5], p=[0.3, 0.7])) if liked else int(rng.choice([1, 2, 3]))
                text = f"{rng.choice(GOOD if liked else BAD)} ({c.lower()})"
                for p in pos:
                    rows.append({"user_id": f"A{uid:05d}", "item_id": items[p]["id"], "ts": day * DAY_MS,
                                 "type": "rating", "rating": rating, "text": text})
                day += int(rng.geometric(0.02))
            uid += 1
    rows = _core(rows, core)
    if ties == "id":  # a dump sorted by product code: a day's rows of one user in item-id order
        rows.sort(key=lambda r: (r["item_id"], r["user_id"]))
    else:
        rows = [rows[k] for k in rng.permutation(len(rows))]
    (out / "interactions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    kept = {r["item_id"] for r in rows}
    has_text = rng.random(len(items)) < text_fraction
    with (out / "items.jsonl").open("w", encoding="utf-8") as f:
        for p, it in enumerate(items):
            if it["id"] not in kept:
                continue
            rec = {"item_id": it["id"], "categories": [it["cat"]], "title": it["id"]}
            if has_text[p]:
                variant = 1 + parents[it["parent"]][1].index(p)
                rec["title"] = f"{it['cat']} product {it['parent']}, variant {variant}"
                rec["text"] = f"{it['cat']} item from line {it['parent']}."
            f.write(json.dumps(rec) + "\n")
    users = {r["user_id"] for r in rows}
    return {"users": len(users), "items": len(kept), "events": len(rows),
            "items_without_text": int(sum(1 for p, it in enumerate(items) if it["id"] in kept and not has_text[p]))}


def _core(rows: list[dict], k: int) -> list[dict]:
    """Drop users and items with fewer than ``k`` rows until none is left (and user-item repeats)."""
    rows = list({(r["user_id"], r["item_id"]): r for r in rows}.values())
    while True:
        u = Counter(r["user_id"] for r in rows)
        i = Counter(r["item_id"] for r in rows)
        kept = [r for r in rows if u[r["user_id"]] >= k and i[r["item_id"]] >= k]
        if len(kept) == len(rows):
            return kept
        rows = kept


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", nargs="?", default="runs/data/synth-variants")
    ap.add_argument("--ties", choices=("id", "random"), default="id")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    print(generate(a.out, seed=a.seed, ties=a.ties))
