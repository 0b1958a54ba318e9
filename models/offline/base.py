"""The recommender interface and the item catalogue that fixes the score order.

A recommender learns its parameters once from a training log (:meth:`Recommender.fit`)
and then follows the stream one event at a time (:meth:`Recommender.learn_one`),
updating only the state of the event's user. :meth:`Recommender.score` returns one
score per catalogue item, in :class:`ItemCatalog` order; higher is better. Which items
a user has already seen is tracked by the caller, not by the model.

>>> import numpy as np
>>> from models.offline.data import Interaction, Item
>>> items = {i: Item(i, i.upper(), i.upper(), (), {}, None) for i in ("b", "a", "c")}
>>> catalog = ItemCatalog(items)
>>> catalog.ids, len(catalog), catalog.index("c")
(('a', 'b', 'c'), 3, 2)
>>> class LastItem(Recommender):
...     '''Scores 1 for the item the user touched last, 0 elsewhere.'''
...     name = "last-item"
...     def fit(self, train, items):
...         self.catalog, self.last = items, {}
...     def learn_one(self, ev):
...         self.last[ev.user_id] = self.catalog.index(ev.item_id)
...     def score(self, user_id):
...         s = np.zeros(len(self.catalog))
...         if user_id in self.last:
...             s[self.last[user_id]] = 1.0
...         return s
>>> model = LastItem()
>>> model.fit([], catalog)
>>> model.learn_one(Interaction("u1", "b", ts=0, type="click"))
>>> model.score("u1").tolist(), model.score("someone-new").tolist()
([0.0, 1.0, 0.0], [0.0, 0.0, 0.0])
"""

from __future__ import annotations

import abc
from typing import TYPE_CHECKING, Iterator, Mapping, Sequence

import numpy as np

from models.offline.data import Interaction, Item

if TYPE_CHECKING:
    from models.offline.data import Dataset

__all__ = ["ItemCatalog", "Recommender"]


class ItemCatalog:
    """A fixed mapping between item ids and dense indices ``0..n-1``.

    Ids are sorted (as strings), so the same items always give the same order.
    """

    __slots__ = ("_ids", "_index", "_items")

    def __init__(self, items: Mapping[str, Item]):
        self._ids: tuple[str, ...] = tuple(sorted(items))
        self._index: dict[str, int] = {item_id: i for i, item_id in enumerate(self._ids)}
        self._items: tuple[Item, ...] = tuple(items[i] for i in self._ids)

    @classmethod
    def from_dataset(cls, ds: "Dataset") -> "ItemCatalog":
        return cls(ds.items)

    @property
    def ids(self) -> tuple[str, ...]:
        """Item ids in index order."""
        return self._ids

    @property
    def items(self) -> tuple[Item, ...]:
        """Item records in index order."""
        return self._items

    def index(self, item_id: str) -> int:
        """Dense index of ``item_id``; ``KeyError`` when it is not in the catalogue."""
        return self._index[item_id]

    def get(self, item_id: str) -> int | None:
        """Dense index of ``item_id``, or ``None`` when it is not in the catalogue."""
        return self._index.get(item_id)

    def item(self, index: int) -> Item:
        return self._items[index]

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._index

    def __iter__(self) -> Iterator[str]:
        return iter(self._ids)

    def __repr__(self) -> str:
        return f"ItemCatalog(n_items={len(self)})"


class Recommender(abc.ABC):
    """Base class of every recommender that the evaluation replays.

    Life cycle: ``fit(train, catalog)`` once, then ``learn_one(event)`` for each event of
    the stream in time order, with ``score(user_id)`` asked before any event. ``learn_one``
    may receive events that were also part of ``train``; it must only update state.
    """

    #: Short name used in reports.
    name: str = "recommender"

    @abc.abstractmethod
    def fit(self, train: Sequence[Interaction], items: ItemCatalog) -> None:
        """Learn the parameters from the training log."""

    @abc.abstractmethod
    def learn_one(self, ev: Interaction) -> None:
        """Fold one new event into the state of ``ev.user_id`` (no parameter training)."""

    @abc.abstractmethod
    def score(self, user_id: str) -> np.ndarray:
        """Scores of shape ``(n_items,)`` in catalogue order, higher is better.

        An unknown user gets a prior (for example popularity). Callers must not modify the
        returned array in place.
        """

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


def seeded_catalog(dataset, seed: int):
    """Seed every generator an evaluation uses (random, numpy, torch), then load ``dataset`` (a
    folder, ``models.offline.loaders``) and its catalogue: how each protocol's run begins."""
    import random

    import torch

    from models.offline.loaders import load_dataset

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    ds = load_dataset(dataset)
    return ds, ItemCatalog.from_dataset(ds)
