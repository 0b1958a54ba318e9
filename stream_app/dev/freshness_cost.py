"""What item freshness (``models.freshness``) costs a ranking on a large catalogue:
`python -m stream_app.dev.freshness_cost --items N`.

N items published uniformly over a year (``ItemVectors`` rows with a publishing time), the
component at a half-life of one day, its clock at day 200. Each row of the table is the mean
thread CPU of one call of ``catalogue_scores`` (what every ranking asks for) after:

* **nothing moved** -- the scores cached;
* **the clock moved, no item came out** -- the batch's events moved ``now``: the cache is checked
  by counting the items out (one pass over N);
* **another item came out** -- ``now`` passed one more publishing time: that row is scored and
  the moments summed again (a few passes over N);
* **an item was added** -- a catalogue event of an item published now: the same, for its row.

In a live stream nearly every batch is one of the last two.

Prints a markdown table.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from models.freshness import DAY_MS, Freshness
from models.items import ItemVectors
from stream_app.dev.bench import markdown_table


def cost(fn, repeat: int) -> float:
    """Mean thread CPU of ``fn()`` in ms."""
    t = time.thread_time()
    for _ in range(repeat):
        fn()
    return (time.thread_time() - t) / repeat * 1e3


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--items", type=int, default=1_000_000)
    p.add_argument("--repeat", type=int, default=50)
    args = p.parse_args(argv)
    published = np.random.default_rng(0).uniform(0, 365, args.items) * DAY_MS
    items = ItemVectors(4, 1, 4)
    for j, ts in enumerate(published.tolist()):
        items.upsert(f"i{j}", text=np.ones(4), category=np.zeros(4), published_ts=ts)
    fresh = Freshness(items, DAY_MS)
    now = 200 * DAY_MS
    fresh.observe(now)
    fresh.catalogue_scores()
    later = iter(np.sort(published[published > now]).tolist())
    moved = iter(range(1, 10 ** 9))

    def clock_moved() -> None:
        fresh.observe(now + next(moved))  # within a millisecond of the last: no item comes out
        fresh.catalogue_scores()

    def item_out() -> None:
        fresh.observe(next(later) + 0.5)
        fresh.catalogue_scores()

    def item_added() -> float:  # the catalogue event itself is not timed
        k = next(moved)
        items.upsert(f"new{k}", text=np.ones(4), category=np.zeros(4), published_ts=fresh.now)
        return cost(fresh.catalogue_scores, 1)

    rows = [["nothing moved", round(cost(fresh.catalogue_scores, args.repeat * 20), 4)],
            ["the clock moved, no item came out", round(cost(clock_moved, args.repeat), 2)],
            ["another item came out", round(cost(item_out, args.repeat), 2)],
            ["an item was added", round(sum(item_added() for _ in range(args.repeat)) / args.repeat, 2)]]
    print(f"item freshness, {args.items:,} items, thread CPU per ranking's call")
    print(markdown_table(["after", "ms"], rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
