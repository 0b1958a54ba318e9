"""The models-folder watcher (stream_app.model_watch): the pointer read only when it changed, a
new version swapped in between two model-thread jobs, a broken one refused while serving goes on."""
from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from models import registry
from models.cooc import CoocModel
from models.cooc.online import rows_by_id
from models.engine import Event, InterestModel
from stream_app.metrics import Metrics
from stream_app.model_watch import ModelWatcher, PointerWatch, load_version, start_version

DIM = 4


def write_version(models_dir: Path, name: str, publish: bool = True) -> Path:
    """A small checkpoint (untrained attention, empty co-engagement counts) as version ``name``."""
    m = InterestModel.untrained(text_dim=DIM, cf_dim=2)
    m.attention.version = f"checkpoint-of-{name}"
    out = m.attention.save(models_dir / name)
    CoocModel().save(out / "cooc.npz")
    if publish:
        registry.publish(models_dir, name)
    return out


class FakeProcessor:
    """What the watcher uses of ``stream_app.processor.Processor``."""

    def __init__(self, model):
        self.model, self.top_k, self.pairs_half_life_ms = model, 3, 0.0
        self.encoder = SimpleNamespace(version="all-MiniLM-L6-v2", dim=model.items.dims["text"])


@pytest.fixture
def thread():
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")
    yield pool
    pool.shutdown(wait=True)


def watcher_on(models_dir: Path, thread, metrics: Metrics | None = None, swapped=None):
    model, name = start_version(models_dir)
    for i in range(8):
        model.add_item(f"i{i}", np.eye(DIM)[i % DIM] + 0.1 * i)
    model.cooc.set_online_row("i1", 2.0, 5, ["i2"], [2.0])
    proc = FakeProcessor(model)

    async def run_model(fn, *args):
        return await asyncio.get_running_loop().run_in_executor(thread, fn, *args)

    w = ModelWatcher(models_dir, proc, run_model, serving=name, registry=metrics.registry if metrics else None,
                     on_swap=swapped)
    return w, proc


def test_the_pointer_is_read_only_when_it_changed(tmp_path, monkeypatch):
    import stream_app.model_watch as mw

    reads = []
    real = mw.current_version
    monkeypatch.setattr(mw, "current_version", lambda d: reads.append(1) or real(d))
    p = PointerWatch(tmp_path)
    assert p.read() is None and reads == []
    (tmp_path / "19700101T000000000Z").mkdir()
    (tmp_path / "19700101T000000001Z").mkdir()
    registry.publish(tmp_path, "19700101T000000000Z")
    assert [p.read() for _ in range(3)] == ["19700101T000000000Z"] * 3 and len(reads) == 1
    registry.publish(tmp_path, "19700101T000000001Z")  # replaced: another inode
    assert p.read() == "19700101T000000001Z" and len(reads) == 2


def test_a_version_is_named_by_its_folder(tmp_path):
    write_version(tmp_path, "20260101T000000000Z")
    assert load_version(tmp_path, "20260101T000000000Z").version == "20260101T000000000Z"
    model, name = start_version(tmp_path)
    assert (model.version, name) == ("20260101T000000000Z", "20260101T000000000Z")
    assert start_version(None) == (None, None)


def test_a_models_folder_that_does_not_exist_is_said_plainly(tmp_path, caplog):
    with caplog.at_level("INFO", logger="stream_app.model_watch"):
        assert start_version(tmp_path / "nowhere") == (None, None)
        assert start_version(tmp_path) == (None, None)  # exists, nothing published yet
    warned = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warned) == 1 and "does not exist" in warned[0].getMessage()
    assert str((tmp_path / "nowhere").resolve()) in warned[0].getMessage()


def test_a_published_version_is_swapped_in_with_the_catalogue_and_the_online_rows(tmp_path, thread):
    write_version(tmp_path, "20260101T000000000Z")
    metrics, swapped = Metrics(), []
    w, proc = watcher_on(tmp_path, thread, metrics, swapped.append)
    old = proc.model
    assert asyncio.run(w.poll()) is None  # nothing new
    write_version(tmp_path, "20260101T000000001Z")
    assert asyncio.run(w.poll()) == "swapped"
    new = proc.model
    assert new is not old and new.version == "20260101T000000001Z" and swapped == [new]
    assert new.items.index.keys() == old.items.index.keys()
    assert rows_by_id(new.cooc) == rows_by_id(old.cooc)
    assert (w.serving, w.swaps) == ("20260101T000000001Z", 1) and w.last_swap_at > 0
    body = metrics.render()[0].decode()
    assert 'stream_reco_model_swaps_total{outcome="swapped"} 1.0' in body
    assert "stream_reco_model_last_swap_timestamp_seconds" in body
    # a state of the old model is folded and ranked by the new one
    states = {}
    old.fold([Event("u", "i1", "click", None, 1, "e1")], states)
    new.fold([Event("u", "i2", "click", None, 2, "e2")], states)
    assert states["u"].events == 2 and new.recommend(states["u"], 3).model_version == "20260101T000000001Z"


def test_the_switch_waits_for_the_batch_in_the_model_thread(tmp_path, thread):
    write_version(tmp_path, "20260101T000000000Z")
    w, proc = watcher_on(tmp_path, thread)
    write_version(tmp_path, "20260101T000000001Z")
    first = proc.model
    loaded, go_on, started, release = (threading.Event() for _ in range(4))
    seen = []
    prepare = w._prepare

    def slow_prepare(name, cat):  # the loader thread: loaded, then held until a batch runs
        new = prepare(name, cat)
        loaded.set()
        go_on.wait(timeout=60)
        return new

    def batch():  # a batch in the model thread: one model from its start to its end
        model = proc.model
        started.set()
        release.wait(timeout=60)
        seen.append(proc.model is model)

    w._prepare = slow_prepare

    async def scenario():
        loop = asyncio.get_running_loop()
        poll = asyncio.ensure_future(w.poll())
        try:
            await loop.run_in_executor(None, loaded.wait, 60)
            job = loop.run_in_executor(thread, batch)
            await loop.run_in_executor(None, started.wait, 60)
            go_on.set()  # the switch is now queued behind the batch
            await asyncio.sleep(0.2)
            assert proc.model is first
        finally:
            go_on.set()
            release.set()
        await job
        return await poll

    assert asyncio.run(scenario()) == "swapped"
    assert seen == [True] and proc.model is not first and proc.model.version == "20260101T000000001Z"


def test_a_broken_version_is_refused_and_serving_goes_on(tmp_path, thread):
    write_version(tmp_path, "20260101T000000000Z")
    metrics = Metrics()
    w, proc = watcher_on(tmp_path, thread, metrics)
    serving = proc.model
    broken = write_version(tmp_path, "20260101T000000001Z")
    (broken / "fusion.npz").write_bytes(b"not a zip file")
    assert asyncio.run(w.poll()) == "refused"
    assert proc.model is serving and w.serving == "20260101T000000000Z"
    assert "20260101T000000001Z" in w.refused
    assert asyncio.run(w.poll()) is None  # not tried again while `current` names it
    assert 'stream_reco_model_swaps_total{outcome="refused"} 1.0' in metrics.render()[0].decode()
    write_version(tmp_path, "20260101T000000002Z")
    assert asyncio.run(w.poll()) == "swapped" and proc.model.version == "20260101T000000002Z"
    assert w.status()["refused"].keys() == {"20260101T000000001Z"}
