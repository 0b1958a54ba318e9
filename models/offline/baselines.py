"""Reference recommenders: global popularity and item-based nearest neighbours.

Both treat every interaction as an implicit positive signal, whatever its type or rating.

>>> from models.offline.data import Interaction, Item
>>> items = {i: Item(i, i, i, (), {}, None) for i in "abcd"}
>>> catalog = ItemCatalog(items)
>>> log = [Interaction(u, i, ts=t, type="click") for t, (u, i) in enumerate(
...     [("u1", "a"), ("u1", "b"), ("u2", "a"), ("u2", "b"), ("u3", "c"), ("u3", "d"), ("u4", "c")])]
>>> pop = Pop(); pop.fit(log, catalog)
>>> pop.score("anyone").tolist()
[2.0, 2.0, 2.0, 1.0]
>>> knn = ItemKNN(k=2, shrink=0.0); knn.fit(log, catalog)
>>> knn.learn_one(Interaction("u9", "a", ts=10, type="click"))
>>> s = knn.score("u9")
>>> int(s.argmax()), bool(s[1] > s[2])   # "b" co-occurs with "a", "c" does not
(1, True)
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from typing import Sequence

import numpy as np

from models.offline.base import ItemCatalog, Recommender
from models.offline.data import Interaction

__all__ = ["ContentKNN", "ItemKNN", "Pop"]

ACC_BYTES = 256 << 20  # ItemKNN: per-user score vectors kept (the users scored last)
BLOCK_CELLS = 64 << 20  # ItemKNN fit: similarity cells computed at once (each row alone: any block, same bits)


class _TrainingEvents:
    """Remembers the training events so that replaying them through ``learn_one`` does not
    count them a second time."""

    __slots__ = ("_pending",)

    def __init__(self, train: Sequence[Interaction]):
        self._pending: Counter[Interaction] = Counter(train)

    def consume(self, ev: Interaction) -> bool:
        """True when ``ev`` is a training event not yet seen in the stream."""
        n = self._pending.get(ev, 0)
        if n <= 0:
            return False
        if n == 1:
            del self._pending[ev]
        else:
            self._pending[ev] = n - 1
        return True


class Pop(Recommender):
    """Most popular items first: the number of interactions per item.

    ``fit`` counts the training log; ``learn_one`` adds each new event (events that were
    already in the training log are not counted twice). Every user gets the same scores.

    >>> from models.offline.data import Interaction, Item
    >>> catalog = ItemCatalog({i: Item(i, i, i, (), {}, None) for i in "xyz"})
    >>> train = [Interaction("u1", "y", 1, "click"), Interaction("u2", "y", 2, "rating", 4.0)]
    >>> pop = Pop(); pop.fit(train, catalog)
    >>> pop.learn_one(train[0])                               # replayed, already counted
    >>> pop.learn_one(Interaction("u3", "z", 3, "favorite"))  # new
    >>> pop.score("u1").tolist()
    [0.0, 2.0, 1.0]
    """

    name = "Pop"

    def __init__(self) -> None:
        self.catalog: ItemCatalog | None = None
        self.counts = np.zeros(0)

    def fit(self, train: Sequence[Interaction], items: ItemCatalog) -> None:
        self.catalog = items
        idx = [items.get(ev.item_id) for ev in train]
        idx = np.asarray([i for i in idx if i is not None], dtype=np.int64)
        self.counts = np.bincount(idx, minlength=len(items)).astype(np.float64)
        self._train = _TrainingEvents(train)

    def learn_one(self, ev: Interaction) -> None:
        if self._train.consume(ev):
            return
        i = self.catalog.get(ev.item_id)
        if i is not None:
            self.counts[i] += 1.0

    def score(self, user_id: str) -> np.ndarray:
        return self.counts


class ItemKNN(Recommender):
    """Item-based k-nearest neighbours on the implicit user-item matrix.

    ``fit`` builds the binary user-item matrix of the training log (sparse) and the shrunk cosine
    similarity ``sim(i, j) = c_ij / (sqrt(n_i * n_j) + shrink)``, where ``c_ij`` counts
    users who interacted with both items and ``n_i`` users who interacted with ``i``.
    Each item keeps only its ``k`` most similar items as neighbours. A user's score for
    item ``j`` is the sum of ``sim(i, j)`` over the items ``i`` of the user's history that
    are neighbours of ``j``. ``learn_one`` adds the event's item to the user's history
    (the similarities stay fixed). Items are tie-broken by training popularity, scaled far
    below any similarity, so a user without history gets a popularity ranking.

    >>> from models.offline.data import Interaction, Item
    >>> catalog = ItemCatalog({i: Item(i, i, i, (), {}, None) for i in "pqr"})
    >>> train = [Interaction(u, i, 0, "click") for u, i in
    ...          [("u1", "p"), ("u1", "q"), ("u2", "p"), ("u2", "q"), ("u3", "r")]]
    >>> knn = ItemKNN(k=1, shrink=0.0); knn.fit(train, catalog)
    >>> knn.neighbours("p")
    [('q', 1.0)]
    >>> knn.learn_one(Interaction("u4", "q", 1, "click"))
    >>> [round(float(x), 3) for x in knn.score("u4")]
    [1.0, 0.0, 0.0]
    """

    name = "ItemKNN"

    def __init__(self, k: int = 100, shrink: float = 10.0, block_size: int = 1024,
                 prior_weight: float = 1e-6):
        if k < 1:
            raise ValueError("k must be >= 1")
        if shrink < 0:
            raise ValueError("shrink must be >= 0")
        self.k = int(k)
        self.shrink = float(shrink)
        self.block_size = int(block_size)
        self.prior_weight = float(prior_weight)
        self.catalog: ItemCatalog | None = None

    def __repr__(self) -> str:
        return f"ItemKNN(k={self.k}, shrink={self.shrink})"

    # -- parameters --------------------------------------------------------------------

    def fit(self, train: Sequence[Interaction], items: ItemCatalog) -> None:
        self.catalog = items
        n_items = len(items)
        x = _user_item_matrix(train, items)             # (U, N) sparse, 1 where a user had an item
        xt = x.T.tocsr()                                # (N, U)
        n = np.asarray(x.sum(axis=0, dtype=np.float64)).ravel()  # users per item
        n_safe = np.where(n > 0, n, 1.0)                # c_ij = 0 whenever n_i = 0
        norm = np.sqrt(n_safe).astype(np.float32)
        k = min(self.k, max(n_items - 1, 1))

        # For each candidate item j (a row block), keep its k most similar items i.
        nbr_i = np.zeros((n_items, k), dtype=np.int64)
        nbr_v = np.zeros((n_items, k), dtype=np.float64)
        block = min(self.block_size, max(64, BLOCK_CELLS // max(n_items, 1)))  # rows at once, bounded memory
        for start in range(0, n_items, block):
            stop = min(start + block, n_items)
            co = (xt[start:stop] @ x).toarray()           # (block, n_items) co-counts, exact
            sim = np.multiply.outer(norm[start:stop], norm)
            sim += np.float32(self.shrink)
            np.divide(co, sim, out=sim)
            sim[np.arange(stop - start), np.arange(start, stop)] = 0.0
            if k < n_items:
                np.negative(sim, out=sim)
                part = np.argpartition(sim, k - 1, axis=1)[:, :k]
            else:
                part = np.broadcast_to(np.arange(n_items), sim.shape)
            del sim
            own = np.arange(start, stop)[:, None]
            # Recompute the kept similarities in float64 from the exact counts.
            vals = np.take_along_axis(co, part, axis=1) / (np.sqrt(n_safe[own] * n_safe[part]) + self.shrink)
            vals[part == own] = 0.0
            nbr_i[start:stop] = part
            nbr_v[start:stop] = vals

        # Transpose to "history item i -> (candidate j, sim)" rows for incremental updates.
        cand = np.repeat(np.arange(n_items), k)
        hist = nbr_i.ravel()
        vals = nbr_v.ravel()
        keep = vals > 0
        cand, hist, vals = cand[keep], hist[keep], vals[keep]
        order = np.argsort(hist, kind="stable")
        self._cand = cand[order]
        self._vals = vals[order]
        self._indptr = np.concatenate([[0], np.cumsum(np.bincount(hist, minlength=n_items))])

        top = n.max() if n.size and n.max() > 0 else 1.0
        self._prior = self.prior_weight * (n / top)
        self._history: dict[str, dict[int, None]] = {}  # per user, its items in the order learned
        self._acc: OrderedDict[str, np.ndarray] = OrderedDict()  # recent users' scores, kept up to date
        self._acc_max = max(16, ACC_BYTES // (8 * max(n_items, 1)))

    def neighbours(self, item_id: str) -> list[tuple[str, float]]:
        """Items whose neighbour list contains ``item_id``, with similarities, best first."""
        i = self.catalog.index(item_id)
        lo, hi = self._indptr[i], self._indptr[i + 1]
        pairs = sorted(zip(self._cand[lo:hi].tolist(), self._vals[lo:hi].tolist()), key=lambda p: (-p[1], p[0]))
        return [(self.catalog.ids[j], round(v, 12)) for j, v in pairs]

    # -- user state ----------------------------------------------------------------------

    def learn_one(self, ev: Interaction) -> None:
        i = self.catalog.get(ev.item_id)
        if i is None:
            return
        seen = self._history.setdefault(ev.user_id, {})
        if i in seen:
            return
        seen[i] = None
        acc = self._acc.get(ev.user_id)
        if acc is not None:
            self._add(acc, i)

    def _add(self, acc: np.ndarray, i: int) -> None:
        lo, hi = self._indptr[i], self._indptr[i + 1]
        acc[self._cand[lo:hi]] += self._vals[lo:hi]

    def score(self, user_id: str) -> np.ndarray:
        """The prior plus, item by item in the order learned, the similarities of the user's
        history: kept for the ``ACC_BYTES`` worth of users scored last, else summed again (the
        same additions in the same order, so the same bits)."""
        acc = self._acc.get(user_id)
        if acc is not None:
            self._acc.move_to_end(user_id)
            return acc
        history = self._history.get(user_id)
        if not history:
            return self._prior
        acc = self._prior.copy()
        for i in history:
            self._add(acc, i)
        self._acc[user_id] = acc
        if len(self._acc) > self._acc_max:
            self._acc.popitem(last=False)
        return acc


class ContentKNN(Recommender):
    """Content-based reference: items nearest by text vector to the user's recent items.

    ``vectors``: one text vector per catalogue item, in catalogue order (normalised here). A user's
    score for item ``j`` is the sum of the cosine similarities between ``j`` and the user's last
    ``recent`` items. No behaviour enters the scores, so an item with no events ranks as well as
    its text allows; a user without history gets zeros (catalogue order).

    >>> from models.offline.data import Interaction, Item
    >>> catalog = ItemCatalog({i: Item(i, i, i, (), {}, None) for i in "abc"})
    >>> cb = ContentKNN(np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]]), recent=5); cb.fit([], catalog)
    >>> cb.learn_one(Interaction("u1", "a", 0, "click"))
    >>> [round(float(x), 3) for x in cb.score("u1")]
    [1.0, 0.994, 0.0]
    """

    name = "Content"

    def __init__(self, vectors: np.ndarray, recent: int = 20):
        if recent < 1:
            raise ValueError("recent must be >= 1")
        v = np.asarray(vectors, dtype=np.float64)
        norms = np.linalg.norm(v, axis=1, keepdims=True)
        self.vectors = v / np.where(norms > 0, norms, 1.0)
        self.recent = int(recent)
        self.catalog: ItemCatalog | None = None

    def __repr__(self) -> str:
        return f"ContentKNN(recent={self.recent})"

    def fit(self, train: Sequence[Interaction], items: ItemCatalog) -> None:
        if len(items) != len(self.vectors):
            raise ValueError(f"{len(self.vectors)} vectors for {len(items)} catalogue items")
        self.catalog = items
        self._recent: dict[str, list[int]] = {}
        self._cache: dict[str, np.ndarray] = {}

    def learn_one(self, ev: Interaction) -> None:
        i = self.catalog.get(ev.item_id)
        if i is None:
            return
        hist = self._recent.setdefault(ev.user_id, [])
        hist.append(i)
        del hist[:-self.recent]
        self._cache.pop(ev.user_id, None)

    def score(self, user_id: str) -> np.ndarray:
        s = self._cache.get(user_id)
        if s is None:
            hist = self._recent.get(user_id)
            s = np.zeros(len(self.vectors)) if not hist else self.vectors @ self.vectors[hist].sum(axis=0)
            self._cache = {user_id: s}  # the replay asks for one user at a time
        return s


def _user_item_matrix(train: Sequence[Interaction], items: ItemCatalog):
    """(U, N) float32 scipy CSR: 1 where a user had an item in ``train`` (repeats count once)."""
    from scipy.sparse import csr_matrix

    users: dict[str, int] = {}
    rows, cols = [], []
    for ev in train:
        j = items.get(ev.item_id)
        if j is not None:
            rows.append(users.setdefault(ev.user_id, len(users)))
            cols.append(j)
    x = csr_matrix((np.ones(len(rows), np.float32), (np.asarray(rows, np.int64), np.asarray(cols, np.int64))),
                   shape=(max(len(users), 1), len(items)), dtype=np.float32)
    x.sum_duplicates()
    x.data[:] = 1.0
    return x
