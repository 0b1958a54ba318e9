"""A synthetic catalogue of any size, with text, and its behaviour log: deterministic by seed.

``synth_catalog(n_items, seed)`` -> (``catalog_item/v1`` messages, their topics). Items belong to
topics (one per ~50 items, 8 to 256); a topic is a theme of a domain (kitchen, hiking, ...), with
words of its own and its domain's, so titles and descriptions are English words the text encoder
can read, and items of one topic read alike. Categories: the domain and the topic; attributes: a
brand (a few per domain) and a price. Popularity is Zipf-like (weight 1 / rank^``ZIPF_S`` over a
random order of the items), as in real catalogues.

``synth_events(items, n_events, seed)`` -> ``interaction/v1`` messages in time order. Users have
Zipf-like activity and one to three favourite topics; they come in sessions of a few events on
one topic (90% a favourite one), each item picked by popularity within the topic, and with
probability ``FOLLOW_ON`` the next one is the previous item's fixed companion (an item of the same
topic): so co-engagement (sessions, companions) and the content dimension (topics share words)
both carry signal. Event types: click, favorite, rating (mostly 3-5 stars).

    python -m stream_app.dev.synth_catalog --items 20 --events 10     # prints a few messages
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass

import numpy as np
import orjson

ZIPF_S = 0.9  # popularity exponent of the items
USER_ZIPF_S = 0.7  # activity exponent of the users
FOLLOW_ON = 0.3  # chance that a session's next item is the previous item's companion
MEAN_SESSION = 5.0  # events per session, on average
EVENTS_PER_USER = 20  # events per user, on average
SPAN_MS = 30 * 86_400_000  # the log covers 30 days

DOMAINS = {
    "kitchen": "pan skillet knife cutting board kettle whisk oven baking steel copper ceramic spatula stove "
               "pot bowl blender coffee grinder",
    "hiking": "trail boots backpack tent compass mountain summit waterproof jacket lantern camping map "
              "rope ridge canyon forest sleeping bag",
    "garden": "soil seeds shovel hose roses tomato planter compost greenhouse pruning shears lawn fence "
              "herbs watering flower bulbs mulch",
    "music": "guitar piano drum violin amplifier strings vinyl record microphone melody chord jazz "
             "orchestra synthesizer headphones speaker tempo",
    "fitness": "dumbbell yoga mat treadmill running shoes protein kettlebell stretching cycling gym "
               "weights rowing cardio endurance recovery band",
    "books": "novel mystery detective romance history biography poetry fantasy dragon empire memoir "
             "science fiction chapter author library saga",
    "travel": "suitcase passport airport hotel beach island cruise luggage museum city harbor train "
              "journey guidebook adventure resort voyage",
    "toys": "puzzle blocks doll robot train set plush bear kite marbles board game dinosaur rocket "
            "castle crayons teddy lego",
    "beauty": "lipstick serum moisturizer perfume shampoo brush mascara lotion cream fragrance skin "
              "nail polish cleanser mask powder",
    "tools": "drill hammer wrench screwdriver saw ladder toolbox sander pliers clamp level tape "
             "measure bolts workbench chisel solder",
    "pets": "dog cat leash collar aquarium bird cage litter treats kennel puppy kitten grooming fish "
            "tank chew toy",
    "photography": "camera lens tripod flash shutter portrait landscape zoom filter aperture film "
                   "darkroom drone studio lighting telephoto",
    "cycling": "bicycle helmet saddle pedals chain gears tire pump wheel brakes frame jersey gloves "
               "mountain road racing",
    "office": "desk chair notebook pen stapler monitor keyboard printer folder lamp calendar "
              "whiteboard envelope planner ink paper",
    "outdoor": "fishing rod kayak paddle canoe hammock grill firewood binoculars hunting archery "
               "lake river snow ski sled",
    "home": "sofa pillow blanket curtain rug candle vase mirror shelf lamp clock frame linen "
            "mattress quilt wardrobe",
}
ADJECTIVES = ("classic modern compact deluxe vintage rugged elegant portable premium handmade "
              "lightweight durable cozy bright quiet smart sturdy gentle bold soft").split()
SENTENCES = ("A {a} {w1} made for {w2} lovers, with {w3} details.",
             "Pairs well with any {w1} and {w2}; {a} and built to last.",
             "Our {a} {w1} brings {w2} and {w3} together.",
             "Designed for everyday {w1}, it keeps your {w2} {a}.",
             "Includes a {a} {w2} and a spare {w3}.")


@dataclass
class SynthItems:
    """The catalogue's messages and what the event generator needs about them."""

    messages: list[dict]
    topic: np.ndarray  # (N,) topic of each item
    popularity: np.ndarray  # (N,) sampling weight (Zipf-like)
    companion: np.ndarray  # (N,) an item of the same topic, the usual follow-on

    @property
    def ids(self) -> list[str]:
        return [m["item_id"] for m in self.messages]


def topics_for(n_items: int) -> int:
    return int(min(256, max(8, n_items // 50)))


def synth_catalog(n_items: int, seed: int = 0, topics: int | None = None) -> SynthItems:
    """``n_items`` catalogue messages (module doc), the same for the same seed."""
    rng = np.random.default_rng(seed)
    n_topics = topics or topics_for(n_items)
    domains = list(DOMAINS)
    words = {d: DOMAINS[d].split() for d in domains}
    # a topic: a domain, and 6 of its words as the theme's own
    topic_domain = [domains[t % len(domains)] for t in range(n_topics)]
    topic_words = [list(rng.choice(words[d], 6, replace=False)) for d in topic_domain]
    topic_name = [f"{d}/{w[0]}-{w[1]}" for d, w in zip(topic_domain, topic_words)]
    brands = {d: [f"{d[:3].title()}{s}" for s in ("co", "ware", "line", "craft", "works")] for d in domains}

    topic = rng.integers(0, n_topics, n_items)
    order = rng.permutation(n_items)
    popularity = np.empty(n_items, dtype=np.float64)
    popularity[order] = 1.0 / np.arange(1, n_items + 1) ** ZIPF_S
    # per-item random choices drawn in bulk (fast at 10^6 items)
    adj = rng.integers(0, len(ADJECTIVES), (n_items, 3))
    own = rng.integers(0, 6, (n_items, 4))
    dom = rng.integers(0, 64, (n_items, 3))
    sent = rng.integers(0, len(SENTENCES), (n_items, 2))
    brand = rng.integers(0, 5, n_items)
    price = np.round(np.exp(rng.normal(3.0, 1.0, n_items)), 2)
    model_no = rng.integers(100, 10_000, n_items)
    messages = []
    for i in range(n_items):
        t = int(topic[i])
        d = topic_domain[t]
        tw, dw = topic_words[t], words[d]
        w = [tw[own[i, 0]], tw[own[i, 1]], dw[dom[i, 0] % len(dw)], dw[dom[i, 1] % len(dw)],
             tw[own[i, 2]], dw[dom[i, 2] % len(dw)]]
        title = f"{ADJECTIVES[adj[i, 0]].title()} {w[0]} {w[1]} {model_no[i]}"
        text = " ".join(SENTENCES[s].format(a=ADJECTIVES[adj[i, k + 1]], w1=w[2 + k], w2=w[4], w3=w[5 - k])
                        for k, s in enumerate(sent[i]))
        messages.append({"item_id": f"i{i}", "title": title, "text": text, "categories": [d, topic_name[t]],
                         "attributes": {"brand": brands[d][brand[i]], "price": float(price[i])}})
    by_topic = _by_topic(topic, n_topics)
    companion = np.empty(n_items, dtype=np.int64)
    for members in by_topic:
        if members.size:
            companion[members] = members[rng.integers(0, members.size, members.size)]
    return SynthItems(messages, topic, popularity, companion)


def _by_topic(topic: np.ndarray, n_topics: int) -> list[np.ndarray]:
    order = np.argsort(topic, kind="stable")
    bounds = np.searchsorted(topic[order], np.arange(n_topics + 1))
    return [order[bounds[t]:bounds[t + 1]] for t in range(n_topics)]


def synth_events(items: SynthItems, n_events: int, seed: int = 0, user_prefix: str = "u",
                 n_users: int | None = None, start_ms: int = 1_700_000_000_000) -> list[dict]:
    """``n_events`` interaction messages over ``items`` in time order (module doc). Event ids are
    ``<user_prefix>-<seed>-<index>``, so two logs with other prefixes or seeds never share one."""
    rng = np.random.default_rng([seed, 1])
    n_items = len(items.messages)
    n_topics = int(items.topic.max()) + 1 if n_items else 1
    by_topic = _by_topic(items.topic, n_topics)
    live_topics = np.array([t for t in range(n_topics) if by_topic[t].size])
    cum = [np.cumsum(items.popularity[m]) for m in by_topic]
    n_users = n_users or max(1, n_events // EVENTS_PER_USER)
    activity = 1.0 / np.arange(1, n_users + 1) ** USER_ZIPF_S
    activity /= activity.sum()
    likes = live_topics[rng.integers(0, live_topics.size, (n_users, 3))]
    n_likes = rng.integers(1, 4, n_users)

    out_user, out_item, out_ts = [], [], []
    made = 0
    cum_activity = np.cumsum(activity)
    while made < n_events:
        sessions = max(16, int((n_events - made) / MEAN_SESSION * 1.2))  # drawn in bulk
        users = np.minimum(n_users - 1, np.searchsorted(cum_activity, rng.random(sessions)))
        lengths = rng.geometric(1.0 / MEAN_SESSION, sessions)
        fav = rng.random(sessions) < 0.9
        pick = rng.integers(0, 3, sessions) % n_likes[users]
        other = live_topics[rng.integers(0, live_topics.size, sessions)]
        starts = start_ms + rng.integers(0, SPAN_MS, sessions)
        for s in range(sessions):
            if made >= n_events:
                break
            u = int(users[s])
            t = int(likes[u, pick[s]]) if fav[s] else int(other[s])
            members, c = by_topic[t], cum[t]
            length = min(n_events - made, int(lengths[s]))
            draws, follow, gaps = rng.random(length), rng.random(length), rng.integers(20_000, 180_000, length)
            ts, prev = int(starts[s]), -1
            for k in range(length):
                if prev >= 0 and follow[k] < FOLLOW_ON:
                    item = int(items.companion[prev])
                else:
                    item = int(members[min(members.size - 1, np.searchsorted(c, draws[k] * c[-1]))])
                out_user.append(u)
                out_item.append(item)
                out_ts.append(ts)
                ts += int(gaps[k])
                prev = item
            made += length
    order = np.argsort(np.asarray(out_ts), kind="stable")
    kind = rng.random(n_events)
    stars = rng.choice([1, 2, 3, 4, 5], n_events, p=[0.05, 0.07, 0.2, 0.38, 0.3])
    events = []
    for k, j in enumerate(order):
        ev = {"event_id": f"{user_prefix}-{seed}-{k}", "type": "click", "user_id": f"{user_prefix}{out_user[j]}",
              "item_id": f"i{out_item[j]}", "ts": int(out_ts[j])}
        if kind[k] > 0.9:
            ev["type"] = "favorite"
        elif kind[k] > 0.7:
            ev["type"], ev["value"] = "rating", int(stars[k])
        events.append(ev)
    return events


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--items", type=int, default=20)
    ap.add_argument("--events", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    items = synth_catalog(args.items, args.seed)
    for m in items.messages[:5]:
        print(orjson.dumps(m).decode())
    for ev in synth_events(items, args.events, args.seed)[:5]:
        print(orjson.dumps(ev).decode())


if __name__ == "__main__":
    main()
