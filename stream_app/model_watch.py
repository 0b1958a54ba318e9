"""A running worker takes each newly published model version, without a restart.

With a models folder (``STREAM_RECO_MODELS_DIR``, written by ``stream-app retrain`` and ``train
--from-kafka``: ``models.registry``) a worker serves, from its start, the version ``current``
names (``start_version``), and a timer (``STREAM_RECO_MODEL_POLL_S``) calls ``ModelWatcher.poll``:

1. ``PointerWatch.read``: one ``stat`` of ``current``; the one-line file is read again only when
   its inode, size or modification time changed (``registry.publish`` replaces it atomically);
2. a name other than the serving one: the serving catalogue is copied in the model thread
   (``models.handover.snapshot``, a copy of two arrays), and the version is loaded in a loader
   thread of its own (``load_version``: ``InterestModel.load``, the catalogue adopted, one event
   folded and one list ranked for a throw-away user, so a model that cannot serve is refused
   here), neither in the model thread nor on the event loop;
3. the switch, one job in the model thread (``install``): the new model brought up to catalogue
   changes made meanwhile and given the online co-engagement rows (``models.handover.hand_over``),
   then it becomes ``Processor.model``. The model thread runs one job at a time and a batch's
   fold and ranking are one job (``Processor.apply_batch``), so the switch falls between two
   batches: every batch is folded and ranked by one model, the next one by the new model. The
   commit rule (``stream_app.checkpoint``) is untouched: which events are applied, published and
   committed does not depend on the model, so nothing is lost or doubled across a switch. User
   states carry over: one written for other dimensions is migrated as it is read
   (``models.migration``), keeping its count, items, event ids and offsets.

A version that fails to load or to serve is logged, counted (``refused``) and not tried again
until ``current`` names another one; the serving model stays. Every list names its model
(``model_version``; a version loaded from the folder is named by its folder). ``/stats``
``model_watch`` and ``/overview`` show the serving version, swaps, the time of the last one and
the versions refused; ``/metrics``: ``stream_reco_model_info`` (the serving version),
``stream_reco_model_swaps_total{outcome=swapped|refused}``,
``stream_reco_model_last_swap_timestamp_seconds``.
"""
from __future__ import annotations

import asyncio
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Awaitable, Callable

from prometheus_client import CollectorRegistry, Counter, Gauge

from models.handover import adopt, hand_over, snapshot
from models.registry import POINTER, current_version

log = logging.getLogger(__name__)

REFUSED_KEPT = 32  # refused versions remembered (and shown)


class PointerWatch:
    """The version ``models_dir/current`` names, read only when the file changed."""

    def __init__(self, models_dir: str | Path):
        self.models_dir = Path(models_dir)
        self._signature: tuple | None = None
        self._name: str | None = None

    def read(self) -> str | None:
        try:
            st = os.stat(self.models_dir / POINTER)
        except FileNotFoundError:
            self._signature = self._name = None
            return None
        signature = (st.st_ino, st.st_size, st.st_mtime_ns)
        if signature != self._signature:
            self._name = current_version(self.models_dir)
            self._signature = signature
        return self._name


def load_version(models_dir: str | Path, name: str, domain=None, encoder=None):
    """The checkpoint of version ``name``, named by its folder (``InterestModel.load``);
    ``models.engine.EncoderMismatch`` when ``encoder`` (the worker's) did not make its vectors."""
    from models.engine import InterestModel

    model = InterestModel.load(Path(models_dir) / name, domain=domain)
    if encoder is not None:
        model.check_encoder(encoder.version, encoder.dim)
    if model.version != name:
        log.info("version %s holds checkpoint %s: its lists are named %s", name, model.version, name)
        model.attention.version = name
    return model


def start_version(models_dir: str | Path | None, domain=None, encoder=None):
    """(model, version name) of what ``current`` names at start, or (None, None) when there is no
    models folder or no published version yet; (None, name) when that version fails to load
    (logged: the worker then serves its ``STREAM_RECO_CHECKPOINT`` and the watcher waits for
    another version)."""
    if not models_dir:
        return None, None
    name = current_version(models_dir)
    if name is None and not Path(models_dir).is_dir():  # e.g. a relative path from another folder
        log.warning("models folder %s (%s) does not exist: serving STREAM_RECO_CHECKPOINT or the "
                    "untrained default until a version is published there", models_dir, Path(models_dir).resolve())
        return None, None
    if name is None:
        log.info("models folder %s: no published version yet", models_dir)
        return None, None
    try:
        return load_version(models_dir, name, domain, encoder), name
    except Exception:
        log.exception("models folder %s: version %s cannot be loaded", models_dir, name)
        return None, name


def serves(model, k: int) -> None:
    """Raise unless ``model`` folds an event and ranks a list for a throw-away user."""
    from models.engine import Event

    states: dict = {}
    if model.items.index:
        item = next(iter(model.items.index))
        model.fold([Event("", item, "click", None, 0, "")], states, learn=lambda ev: False)
    model.recommend(states.get("", model.new_state()), k)


class ModelWatcher:
    """Polls a models folder and swaps the processor's model (module doc). ``run_model``: runs a
    function in the model thread (``Context.run_model``); ``on_swap(model)``: called on the loop
    after each switch."""

    def __init__(self, models_dir: str | Path, processor, run_model: Callable[..., Awaitable[Any]],
                 serving: str | None = None, domain=None, registry: CollectorRegistry | None = None,
                 on_swap: Callable[[Any], None] | None = None, clock: Callable[[], float] = time.time):
        self.models_dir = Path(models_dir)
        self.pointer = PointerWatch(models_dir)
        self.processor, self.run_model, self.domain = processor, run_model, domain
        self.serving = serving  # the version name serving, None: not one of the folder's
        self.on_swap, self.clock = on_swap, clock
        self.loading: str | None = None
        self.swaps = 0
        self.last_swap_at: float | None = None
        self.last_load_s: float | None = None
        self.refused: dict[str, str] = {}  # version -> why, the newest last
        self._loader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model-loader")
        r = registry if registry is not None else CollectorRegistry()
        self.m_swaps = Counter("stream_reco_model_swaps_total", "Published model versions taken (swapped) "
                               "or refused while running.", ["outcome"], registry=r)
        for outcome in ("swapped", "refused"):
            self.m_swaps.labels(outcome=outcome)
        self.m_last = Gauge("stream_reco_model_last_swap_timestamp_seconds",
                            "When the serving model was last swapped (Unix time; 0: never).", registry=r)

    def refuse(self, name: str, why: str) -> None:
        """Count ``name`` as refused (not tried again until ``current`` names another)."""
        self.refused.pop(name, None)
        self.refused[name] = why
        while len(self.refused) > REFUSED_KEPT:
            self.refused.pop(next(iter(self.refused)))
        self.m_swaps.labels(outcome="refused").inc()

    async def poll(self) -> str | None:
        """One look at ``current``: "swapped", "refused", or None (nothing new)."""
        name = self.pointer.read()
        if name is None or name == self.serving or name in self.refused or self.loading:
            return None
        self.loading = name
        t0 = time.perf_counter()
        try:
            cat = await self.run_model(snapshot, self.processor.model)
            new = await asyncio.get_running_loop().run_in_executor(self._loader, self._prepare, name, cat)
            done = await self.run_model(self.install, new, cat.version)
        except Exception as exc:
            log.exception("model version %s refused; %s keeps serving", name, self.processor.model.version)
            self.refuse(name, f"{type(exc).__name__}: {exc}"[:300])
            return "refused"
        finally:
            self.loading = None
        self.last_load_s = round(time.perf_counter() - t0, 3)
        self.serving, self.swaps, self.last_swap_at = name, self.swaps + 1, self.clock()
        self.m_swaps.labels(outcome="swapped").inc()
        self.m_last.set(self.last_swap_at)
        log.info("now serving model version %s (%.2f s to load; %s)", name, self.last_load_s, done)
        if self.on_swap is not None:
            self.on_swap(new)
        return "swapped"

    def _prepare(self, name: str, cat) -> Any:
        """In the loader thread: the version loaded, the catalogue adopted, checked to serve."""
        new = load_version(self.models_dir, name, self.domain, self.processor.encoder)
        adopt(new, cat)
        serves(new, self.processor.top_k)
        return new

    def install(self, new, snapshot_version: int) -> dict:
        """In the model thread, between two batches: ``new`` takes over (``hand_over``)."""
        done = hand_over(self.processor.model, new, snapshot_version, self.processor.pairs_half_life_ms)
        self.processor.model = new
        return done

    def status(self) -> dict:
        """``/stats`` ``model_watch`` and the page."""
        return {"models_dir": str(self.models_dir), "serving": self.serving, "loading": self.loading,
                "swaps": self.swaps, "last_swap_at": self.last_swap_at, "last_load_s": self.last_load_s,
                "refused": dict(self.refused)}

    def close(self) -> None:
        self._loader.shutdown(wait=False, cancel_futures=True)
