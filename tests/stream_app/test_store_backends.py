"""``UserStore`` behind each state backend (``stream_app.state_backends``): the same reads, writes,
drops and restores (from a changelog held in memory here; against a real broker in
tests/integration/test_store.py), the writer-epoch rules included."""
from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from stream_app import fencing
from stream_app.settings import Settings, SettingsError
from stream_app.state_backends import MemoryBackend, RocksBackend, RocksStates, backend_for, open_backend
from stream_app.store import UserStore


class FakeChangelog:
    """Just enough of a group-less ``AIOKafkaConsumer`` for ``UserStore.restore``, over records
    kept in a list per partition; ``send`` appends as a producer would."""

    def __init__(self, topic: str):
        self.topic = topic
        self.logs: dict[int, list] = {}
        self._pos: dict = {}

    async def send(self, topic, key=None, value=None, partition=None, headers=None):
        log = self.logs.setdefault(partition, [])
        log.append(SimpleNamespace(key=key, value=value, partition=partition, offset=len(log), headers=headers or []))
        done = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    def assign(self, tps):
        self._pos = {tp: 0 for tp in tps}

    def unsubscribe(self):
        self._pos = {}

    async def end_offsets(self, tps):
        return {tp: len(self.logs.get(tp.partition, [])) for tp in tps}

    async def seek_to_beginning(self, *tps):
        for tp in tps:
            self._pos[tp] = 0

    async def position(self, tp):
        return self._pos[tp]

    async def getmany(self, *tps, timeout_ms=0):
        out = {}
        for tp in tps:
            batch = self.logs.get(tp.partition, [])[self._pos[tp]:self._pos[tp] + 3]  # small fetches
            self._pos[tp] += len(batch)
            out[tp] = batch
        return out

    async def stop(self):
        pass


@pytest.fixture(params=["memory", "rocksdb"])
def make_store(request, tmp_path):
    created = []

    def make(changelog: FakeChangelog) -> UserStore:
        backend = open_backend(request.param, tmp_path / "state", changelog.topic)
        store = UserStore("unused:9092", changelog.topic, backend=backend)
        store._reader = changelog  # what start() would open
        created.append(store)
        return store

    yield make
    for store in created:
        asyncio.run(store.stop())


async def _restored(store: UserStore, partitions, writer: fencing.Writer | None = None) -> UserStore:
    token = fencing.assignment.set(writer)
    try:
        await store.restore(partitions)
    finally:
        fencing.assignment.reset(token)
    return store


def test_get_put_drop_and_restore_behind_either_backend(make_store):
    async def scenario():
        log = FakeChangelog("t-changelog")
        for key, value, p in [(b"a", b"a1", 0), (b"b", b"b1", 0), (b"a", b"a2", 0), (b"b", None, 0),
                              (b"c", b"c1", 1)]:
            await log.send(log.topic, key=key, value=value, partition=p)
        store = make_store(log)
        await store.restore([0])
        assert store.owns(0) and not store.owns(1)
        assert dict(store.parts[0].items()) == {b"a": b"a2"} and store.parts[0] == {b"a": b"a2"}
        await store.restore([1])
        assert store.get(1, "c") == b"c1" and store.find("a") == b"a2" and len(store) == 2
        assert store.get(0, "nobody") is None and store.find("nobody") is None
        await (await store.put(log.send, 1, "d", b"d1"))
        await (await store.put(log.send, 1, "d", b"d2"))  # overwritten: still one state
        await (await store.put(log.send, 0, "a", None))
        await (await store.put(log.send, 0, "gone", None))  # deleting what is not there
        assert store.find("a") is None and store.get(1, "d") == b"d2" and len(store) == 2
        store.drop([0])
        assert not store.owns(0) and store.owns(1) and len(store) == 2
        await store.restore([1])  # restored again: from the start, nothing kept from before
        assert store.parts[1] == {b"c": b"c1", b"d": b"d2"}

        again = await _restored(make_store(log), [0, 1])  # another worker taking both over
        assert again.parts == {0: {}, 1: {b"c": b"c1", b"d": b"d2"}}

    asyncio.run(scenario())


def test_a_former_owners_late_writes_are_refused_behind_either_backend(make_store):
    async def scenario():
        log = FakeChangelog("t-changelog")
        old = await _restored(make_store(log), [0], fencing.Writer(1, "member-a", log.send))
        await (await old.put(log.send, 0, "u", b"u-by-G1"))
        new = await _restored(make_store(log), [0], fencing.Writer(2, "member-b", log.send))
        assert new.get(0, "u") == b"u-by-G1" and new.epochs == {0: 2}
        await (await new.put(log.send, 0, "u", b"u-by-G2"))
        await (await old.put(log.send, 0, "u", b"u-stale"))  # the zombie's write lands last
        await (await old.put(log.send, 0, "z", b"z-stale"))
        third = await _restored(make_store(log), [0], fencing.Writer(3, "member-c", log.send))
        assert third.parts[0] == {b"u": b"u-by-G2"} and third.epochs == {0: 3} and len(third) == 1
        repaired = {r.key: r.value for r in log.logs[0][-2:]}  # written again with epoch 3
        assert repaired == {b"u": b"u-by-G2", b"z": None}

    asyncio.run(scenario())


def test_a_failed_restore_leaves_nothing_open(tmp_path):
    async def scenario():
        log = FakeChangelog("t-changelog")
        await log.send(log.topic, key=b"u", value=b"x", partition=0, headers=[(fencing.EPOCH_HEADER, b"bad")])
        backend = open_backend("rocksdb", tmp_path, log.topic)
        store = UserStore("unused:9092", log.topic, backend=backend)
        store._reader = log
        with pytest.raises(fencing.CorruptRecord):
            await store.restore([0])
        assert not store.owns(0) and list(backend.root.iterdir()) == []
        await store.stop()
        assert not backend.root.exists()

    asyncio.run(scenario())


def test_a_revoked_partitions_database_is_deleted_and_a_new_one_starts_empty(tmp_path):
    backend = RocksBackend(tmp_path)
    first = backend.open(0)
    first[b"u"] = b"1"
    assert first.path.exists()
    backend.release(first)
    assert not first.path.exists()
    second = backend.open(0)
    assert second.path != first.path and len(second) == 0 and second.get(b"u") is None
    backend.close()
    assert not backend.root.exists()


def test_the_cache_is_bounded_and_reads_fall_through_to_disk(tmp_path):
    states = RocksStates(tmp_path / "db", cache_states=2)
    try:
        for i in range(5):
            states[b"k%d" % i] = b"v%d" % i
        assert len(states._cache) == 0 and len(states) == 5  # written, not read yet
        assert [states.get(b"k%d" % i) for i in range(5)] == [b"v%d" % i for i in range(5)]
        assert list(states._cache) == [b"k3", b"k4"]  # the two read last
        states[b"k4"] = b"v4-new"  # a write goes through the cache
        assert states._cache[b"k4"] == b"v4-new" and states._db.get(b"k4") == b"v4-new"
        states[b"k4"] = b"v4"
        assert b"k0" in states and b"nope" not in states and sorted(states) == [b"k%d" % i for i in range(5)]
        assert states.pop(b"k0") == b"v0" and states.pop(b"k0", None) is None and len(states) == 4
        del states[b"k4"]
        with pytest.raises(KeyError):
            states[b"k4"]
    finally:
        states.close()


def test_folders_of_processes_gone_are_removed(tmp_path):
    leftover = tmp_path / "999999999-deadbeef" / "p0-0000"
    leftover.mkdir(parents=True)
    backend = RocksBackend(tmp_path)
    assert not leftover.parent.exists() and backend.root.exists()
    backend.close()


def test_the_setting_picks_the_backend(tmp_path):
    assert isinstance(backend_for(Settings(), "c"), MemoryBackend)
    rocks = backend_for(Settings(state_store="rocksdb", state_dir=str(tmp_path)), "c")
    try:
        assert isinstance(rocks, RocksBackend) and rocks.root.parent == tmp_path / "c"
    finally:
        rocks.close()
    s = Settings.from_env({"STREAM_RECO_STATE_STORE": "rocksdb", "STREAM_RECO_CACHE_DIR": str(tmp_path)})
    rocks = backend_for(s, "c")
    try:
        assert rocks.root.parent == tmp_path / "state" / "c"
    finally:
        rocks.close()
    with pytest.raises(SettingsError):
        Settings.from_env({"STREAM_RECO_STATE_STORE": "disk"})
