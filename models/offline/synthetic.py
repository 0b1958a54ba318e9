"""Small synthetic data sets for the domain presets (e-commerce, news, video).

The presets themselves (:class:`models.domains.DomainConfig`: event weights, dimensions,
freshness half-life) live in the serving core, :mod:`models.domains`; this module only writes
data that looks like each domain. All three domains use the four event types of the data layer
(``click``, ``favorite``, ``rating``, ``review``):

- **ecommerce**: ``click`` = product view, ``favorite`` = add to cart / purchase (strong),
  ``rating`` = 1-5 stars, ``review`` = written review. Items have ``attributes.price`` and
  ``attributes.brand``; users keep to a price band and favour one or two brands.
- **news**: ``click`` = article read (most events), ``favorite`` = bookmark/share, ``review`` =
  comment, ``rating`` = rare 1-5 vote. Items have ``published_ts`` and are read mostly within a
  day or two of publication (half-life 1 day).
- **video**: ``click`` = a watch, with ``rating`` holding the **fraction watched** in [0, 1]
  (a click's rating is not a star rating; the model ignores it for clicks), ``favorite`` =
  like, ``rating`` = 1-5 stars, ``review`` = comment. Episodes of a series are watched in a row.

:func:`generate` writes a small data set in the generic JSON Lines layout (``items.jsonl``,
``interactions.jsonl``; see :mod:`models.offline.data`) plus ``domain.json`` (the preset and
the generator arguments). It is deterministic for a seed and has real structure: users prefer a
few categories (and, per domain, price bands and brands, fresh articles, whole series), popular
items are more popular, and each item has "companions" that are often engaged with right after
it (co-engagement a collaborative model can learn).

>>> import json, tempfile
>>> with tempfile.TemporaryDirectory() as tmp:
...     out = generate("ecommerce", tmp, seed=1, n_users=20, n_items=30, n_events=200)
...     items = [json.loads(l) for l in (out / "items.jsonl").read_text().splitlines()]
...     events = (out / "interactions.jsonl").read_text().splitlines()
>>> len(items), len(events)
(30, 200)
>>> sorted(items[0]["attributes"])
['brand', 'price']
>>> sorted(GENERATED)
['ecommerce', 'news', 'video']
"""
from __future__ import annotations

import json
import math
import random
from dataclasses import asdict
from pathlib import Path

from models.domains import DomainConfig, get_domain
from models.offline.vocabulary import (_NEWS, _NEWS_BAD, _NEWS_GOOD, _NEWS_VERBS, _SHOP, _SHOP_ADJ, _SHOP_BAD,
                                       _SHOP_GOOD, _VIDEO, _VIDEO_BAD, _VIDEO_GOOD)

__all__ = ["GENERATED", "generate"]

#: The presets this module can generate data for (``default`` has none).
GENERATED = ("ecommerce", "news", "video")

DAY_MS = 86_400_000
#: Start of the synthetic timeline: 2024-01-01T00:00:00Z.
T0_MS = 1_704_067_200_000


# --------------------------------------------------------------------------- generator


def _dirichlet(rng: random.Random, n: int, alpha: float) -> list[float]:
    g = [rng.gammavariate(alpha, 1.0) for _ in range(n)]
    s = sum(g) or 1.0
    return [x / s for x in g]


def _items_ecommerce(rng: random.Random, n_items: int, span_days: int) -> list[dict]:
    cats = list(_SHOP)
    items = []
    for i in range(n_items):
        cat = cats[i % len(cats)] if i < len(cats) else rng.choice(cats)
        subs, nouns, (lo, hi), brands = _SHOP[cat]
        k = rng.randrange(len(nouns))
        sub, noun, brand, adj = subs[k // 2], nouns[k], rng.choice(brands), rng.choice(_SHOP_ADJ[cat])
        price = round(math.exp(rng.uniform(math.log(lo), math.log(hi))), 2)  # log-uniform
        title = f"{brand} {adj} {noun}"
        items.append({
            "item_id": f"p{i + 1:04d}", "title": title,
            "text": f"{title}. {adj} {noun.lower()} from {brand} in {cat} / {sub}. Price {price:.2f}.",
            "categories": [cat, sub], "attributes": {"price": price, "brand": brand},
            "published_ts": None,
        })
    return items


def _items_news(rng: random.Random, n_items: int, span_days: int) -> list[dict]:
    cats = list(_NEWS)
    items = []
    for i in range(n_items):
        cat = cats[i % len(cats)] if i < len(cats) else rng.choice(cats)
        subs, subjects, objects = _NEWS[cat]
        sub, subject, verb, obj = rng.choice(subs), rng.choice(subjects), rng.choice(_NEWS_VERBS), rng.choice(objects)
        plural = subject.split()[-1].endswith("s")
        title = f"{subject} {verb[0] if plural else verb[1]} {obj}"
        published = T0_MS + int(rng.uniform(0, span_days) * DAY_MS)
        items.append({
            "item_id": f"n{i + 1:04d}", "title": title,
            "text": f"{title}. {cat} news, {sub.lower()}: the latest on {obj}.",
            "categories": [cat, sub], "attributes": {}, "published_ts": published,
        })
    return items


def _items_video(rng: random.Random, n_items: int, span_days: int) -> list[dict]:
    genres = list(_VIDEO)
    items: list[dict] = []
    g = 0
    while len(items) < n_items:
        genre = genres[g % len(genres)] if g < len(genres) else rng.choice(genres)
        g += 1
        nouns, adjs = _VIDEO[genre]
        name = f"The {rng.choice(adjs)} {rng.choice(nouns)}"
        released = T0_MS + int(rng.uniform(-span_days, span_days) * DAY_MS)
        # a series of 2-6 episodes, or a film
        episodes = rng.choice((1, 1, 2, 3, 4, 6))
        series = f"s{g:03d}" if episodes > 1 else None
        for ep in range(1, episodes + 1):
            if len(items) >= n_items:
                break
            title = f"{name} E{ep}" if series else name
            kind = "series" if series else "film"
            items.append({
                "item_id": f"v{len(items) + 1:04d}", "title": title,
                "text": f"{title}. A {rng.choice(adjs).lower()} {genre.lower()} {kind} about the "
                        f"{rng.choice(nouns).lower()}.",
                "categories": [genre], "published_ts": released + (ep - 1) * 7 * DAY_MS,
                "attributes": {"series": series, "episode": ep if series else None,
                               "duration_min": rng.choice((22, 45, 50, 95, 110, 125)) if not series
                               else rng.choice((22, 30, 45, 55))},
            })
    return items


def _companions(rng: random.Random, items: list[dict], domain: str) -> list[list[int]]:
    """For each item, 2-3 items often engaged with right after it (same top category mostly;
    for video, the next episode of the series first)."""
    by_cat: dict[str, list[int]] = {}
    for i, it in enumerate(items):
        by_cat.setdefault(it["categories"][0], []).append(i)
    out = []
    for i, it in enumerate(items):
        comp: list[int] = []
        if domain == "video" and it["attributes"].get("series"):
            nxt = i + 1
            if nxt < len(items) and items[nxt]["attributes"].get("series") == it["attributes"]["series"]:
                comp.append(nxt)
        pool = [j for j in by_cat[it["categories"][0]] if j != i and j not in comp]
        rng.shuffle(pool)
        comp.extend(pool[: 3 - len(comp)] if rng.random() < 0.8 else pool[:1])
        if rng.random() < 0.3:  # a cross-category companion (bundles, related stories)
            comp.append(rng.randrange(len(items)))
        out.append([j for j in comp if j != i])
    return out


def _band(price: float) -> int:
    return 0 if price < 25 else 1 if price < 120 else 2


def generate(domain: str | DomainConfig, out_dir: str | Path, seed: int = 0, n_users: int = 200,
             n_items: int = 150, n_events: int = 3000, span_days: int = 30) -> Path:
    """Write a synthetic data set for ``domain`` under ``out_dir``; returns the folder.

    ``n_events`` interactions (each user at least 3) from 2024-01-01 on: users start within
    the first 60 % of ``span_days`` and spread their events over the rest (a few run a little
    past the end). Every item is in the catalogue, not necessarily engaged with. Same
    arguments, same bytes.

    >>> import tempfile, filecmp
    >>> with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
    ...     _ = generate("video", a, seed=7, n_users=10, n_items=12, n_events=60)
    ...     _ = generate("video", b, seed=7, n_users=10, n_items=12, n_events=60)
    ...     filecmp.cmp(f"{a}/interactions.jsonl", f"{b}/interactions.jsonl", shallow=False)
    True
    """
    cfg = get_domain(domain)
    if cfg.name not in GENERATED:
        raise ValueError(f"no generator for domain {cfg.name!r}; use one of {list(GENERATED)}")
    if n_users < 1 or n_items < 2 or n_events < 3 * n_users:
        raise ValueError("need n_users >= 1, n_items >= 2 and n_events >= 3 * n_users")
    rng = random.Random(f"stream-reco/{cfg.name}/{seed}")
    make_items = {"ecommerce": _items_ecommerce, "news": _items_news, "video": _items_video}[cfg.name]
    items = make_items(rng, n_items, span_days)
    cats = sorted({it["categories"][0] for it in items})
    cat_of = [cats.index(it["categories"][0]) for it in items]
    popularity = [rng.paretovariate(1.3) for _ in items]  # heavy-tailed
    companions = _companions(rng, items, cfg.name)
    brands = sorted({it["attributes"]["brand"] for it in items}) if cfg.name == "ecommerce" else []

    counts = _event_counts(rng, n_users, n_events)

    rows: list[dict] = []
    half_life = cfg.freshness_half_life_days
    for u in range(n_users):
        user = f"u{u + 1:04d}"
        taste = _dirichlet(rng, len(cats), 0.3)
        band = rng.choice((0, 1, 1, 2))
        fav_brands = set(rng.sample(brands, min(len(brands), rng.choice((1, 2))))) if brands else set()
        critic = rng.uniform(-0.6, 0.6)  # rating bias
        base = []
        for i, it in enumerate(items):
            w = (0.02 + taste[cat_of[i]]) * popularity[i]
            if cfg.name == "ecommerce":
                w *= 3.0 if _band(it["attributes"]["price"]) == band else 0.5
                w *= 2.5 if it["attributes"]["brand"] in fav_brands else 1.0
            base.append(w)
        t = T0_MS + int(rng.uniform(0, span_days * 0.6) * DAY_MS)
        if half_life is not None:  # start once something is out
            t = max(t, min(it["published_ts"] for it in items) + 3_600_000)
        end = T0_MS + span_days * DAY_MS
        step = max(60_000, int((end - t) / (counts[u] + 1)))
        prev: int | None = None
        for _ in range(counts[u]):
            t += int(rng.expovariate(1.0 / step)) + 1_000
            follow = [] if prev is None else [
                j for j in companions[prev]
                if half_life is None or items[j]["published_ts"] <= t]  # nothing unreleased
            if follow and rng.random() < 0.35:
                i = rng.choice(follow)
            else:
                weights = base if half_life is None else _fresh_weights(base, items, t, half_life)
                i = rng.choices(range(len(items)), weights=weights)[0]
            it = items[i]
            affinity = taste[cat_of[i]] * len(cats)  # ~1 for an average category
            if cfg.name == "ecommerce":
                affinity += 0.8 * (_band(it["attributes"]["price"]) == band) + 0.6 * (it["attributes"]["brand"] in fav_brands)
            stars = max(1, min(5, round(2.6 + 0.9 * math.log1p(affinity) + critic + rng.gauss(0, 0.8))))
            rows.append(_event_row(rng, cfg.name, user, it, t, stars, affinity))
            prev = i

    rows.sort(key=lambda r: (r["ts"], r["user_id"]))
    return _write(out_dir, items, rows, {"domain": asdict(cfg), "seed": seed, "n_users": n_users,
                                         "n_items": n_items, "n_events": n_events, "span_days": span_days})


def _event_counts(rng: random.Random, n_users: int, n_events: int) -> list[int]:
    """Events per user: log-normal activity, at least 3 each, summing to ``n_events``."""
    activity = [rng.lognormvariate(0.0, 0.8) for _ in range(n_users)]
    total = sum(activity)
    counts = [max(3, int(n_events * a / total)) for a in activity]
    order = sorted(range(n_users), key=lambda u: -activity[u])
    k = 0
    while sum(counts) != n_events:  # fix rounding on the most active users
        u = order[k % n_users]
        if sum(counts) < n_events:
            counts[u] += 1
        elif counts[u] > 3:
            counts[u] -= 1
        k += 1

    return counts


def _fresh_weights(base: list[float], items: list[dict], t: int, half_life: float) -> list[float]:
    """Item weights at time ``t`` for a domain where items go stale (news)."""
    weights = []
    for w, it in zip(base, items):
        age_days = (t - it["published_ts"]) / DAY_MS
        weights.append(0.0 if age_days < 0 else w * 0.5 ** (age_days / half_life))  # unpublished: 0
    if not any(weights):  # everything out is too old to register: any of it
        weights = [1.0 if it["published_ts"] <= t else 0.0 for it in items]
    return weights


def _event_row(rng: random.Random, domain: str, user: str, it: dict, t: int, stars: int, affinity: float) -> dict:
    """One interaction: the event type by the domain's mix, with rating / review text / watch fraction."""
    row = {"user_id": user, "item_id": it["item_id"], "ts": t, "type": "click"}
    r = rng.random()
    if domain == "ecommerce":
        kind = "click" if r < 0.68 else "favorite" if r < 0.82 else "rating" if r < 0.93 else "review"
    elif domain == "news":
        kind = "click" if r < 0.85 else "favorite" if r < 0.93 else "review" if r < 0.98 else "rating"
    else:
        kind = "click" if r < 0.78 else "favorite" if r < 0.88 else "rating" if r < 0.96 else "review"
    row["type"] = kind
    if kind == "rating":
        row["rating"] = float(stars)
    elif kind == "review":
        good, bad = {"ecommerce": (_SHOP_GOOD, _SHOP_BAD), "news": (_NEWS_GOOD, _NEWS_BAD),
                     "video": (_VIDEO_GOOD, _VIDEO_BAD)}[domain]
        row["text"] = rng.choice(good if stars >= 3 else bad)
    elif kind == "click" and domain == "video":
        frac = 1.0 / (1.0 + math.exp(-(math.log1p(affinity) * 2.0 - 0.8 + rng.gauss(0, 0.7))))
        row["rating"] = round(frac, 3)  # fraction watched
    return row


def _write(out_dir: str | Path, items: list[dict], rows: list[dict], meta: dict) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with (out / "items.jsonl").open("w", encoding="utf-8") as fh:
        for it in items:
            fh.write(json.dumps(it, ensure_ascii=False) + "\n")
    with (out / "interactions.jsonl").open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    (out / "domain.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return out
