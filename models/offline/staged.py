"""Fitting fused models with their independent steps in parallel (``models.offline.parallel``).

``FusedRecommender.fit`` then ``select`` runs, one after the other: the attention fusion's
training, the co-engagement parameter search, each sequence model's training, then the blend
(and its gate) on the validation targets. Only the blend needs the others; so ``stage`` submits
the search, each sequence model and each model's attention training as separate jobs at once, and
``Staged.selected(i)`` waits for what model ``i`` needs, hands it over (``provide``) and runs the
blend selection here. The results are those of ``fit`` + ``select``: the same functions, each
seeding its own generators. Several models (``fused`` and ``fused-no-text``) share the search and
the sequence models of the first, as the evaluation has always done.
"""
from __future__ import annotations

import contextlib

from concurrent.futures import Future
from dataclasses import dataclass
from typing import Sequence

from models.offline.base import ItemCatalog
from models.offline.fused import FusedRecommender
from models.offline.parallel import Jobs
from models.offline.protocol import Split
from models.offline.train_sequence import best_sequence, train_sequence
from models.offline.tune_cooc import MAX_PASSES, tune_cooc


def fitted(rec: FusedRecommender, split: Split, catalog: ItemCatalog) -> FusedRecommender:
    """``rec`` with its attention fusion trained; its co-engagement counts are fitted in ``select``
    (job)."""
    rec.fit(split.train, catalog, counts=False)
    return rec


@dataclass
class Staged:
    split: Split
    catalog: ItemCatalog
    fits: list[Future]
    cooc: Future | None
    sequences: list[Future]
    budget_s: float | None
    max_passes: int
    _sequence: object = None
    _sequence_done: bool = False

    def fitted(self, i: int) -> FusedRecommender:
        """Model ``i`` after its attention training, with the shared search result and sequence
        model handed over (``provide``), its blend not chosen yet."""
        rec = self.fits[i].result()
        rec.provide(self.cooc.result() if self.cooc is not None else None, self.sequence())
        return rec

    def selected(self, i: int, jobs: Jobs | None = None) -> FusedRecommender:
        """Model ``i`` as ``fit`` + ``select`` leave it; ``jobs``: the pool whose place this
        process takes while it selects (``Jobs.working_here``)."""
        rec = self.fitted(i)
        with jobs.working_here() if jobs is not None else contextlib.nullcontext():
            rec.select(self.split, self.budget_s, self.max_passes)
        return rec

    def sequence(self):
        if not self._sequence_done:
            trained = [f.result() for f in self.sequences]
            self._sequence = best_sequence(trained, self.split.train, self.catalog) if trained else None
            self._sequence_done = True
        return self._sequence


def stage(jobs: Jobs, recs: Sequence[FusedRecommender], split: Split, catalog: ItemCatalog,
          budget_s: float | None = None, max_passes: int = MAX_PASSES) -> Staged:
    """Submit the independent steps of ``recs`` (not yet fitted, no warm start): the co-engagement
    search and the sequence models of ``recs[0]`` (unless its parameters are given), the longest
    jobs first, then each model's attention training."""
    first = recs[0]
    if any(r.warm is not None for r in recs):
        raise ValueError("a warm start trains its sequence model from the served one: fit and select instead")
    for r in recs[1:]:
        r.cooc_params = r.cooc_params or first.cooc_params
    sequences = [jobs.submit(train_sequence, split.train, split, catalog, cfg) for cfg in first.sequence_configs]
    fits = [jobs.submit(fitted, r, split, catalog) for r in recs]
    cooc = None
    if first.cooc_params is None:
        cooc = jobs.submit(tune_cooc, split, catalog, budget_s, max_passes=max_passes)
    return Staged(split, catalog, fits, cooc, sequences, budget_s, max_passes)
