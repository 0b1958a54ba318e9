"""The models folder: version names that only grow, folders that appear whole, a pointer replaced
atomically."""
from __future__ import annotations

import threading

import pytest

from models import registry


def test_version_names_sort_in_the_order_they_were_made(tmp_path):
    names = []
    for now in (1_000.0, 1_000.0, 999.0, 1_000.0005, 2_000.0):  # a clock that stalls and steps back
        name = registry.new_version(tmp_path, now=now)
        registry.partial_dir(tmp_path, name).mkdir()  # a run in progress holds its name too
        names.append(name)
    assert names == sorted(names) and len(set(names)) == len(names)
    assert names[0] == "19700101T001640000Z" and names[1] == "19700101T001640001Z"
    assert names[-1] == "19700101T003320000Z"
    assert registry.versions(tmp_path) == []  # partial folders are not versions


def test_a_version_appears_whole_and_the_pointer_names_it(tmp_path):
    v = registry.new_version(tmp_path)
    work = registry.partial_dir(tmp_path, v)
    work.mkdir()
    (work / "config.json").write_text("{}")
    assert registry.versions(tmp_path) == [] and registry.current_version(tmp_path) is None
    assert registry.current_checkpoint(tmp_path) is None
    path = registry.commit_version(tmp_path, v)
    assert registry.versions(tmp_path) == [v] and (path / "config.json").is_file() and not work.exists()
    registry.publish(tmp_path, v)
    assert (tmp_path / registry.POINTER).read_text() == v + "\n"
    assert registry.current_checkpoint(tmp_path) == tmp_path / v
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([v, registry.POINTER])  # no temporary left


def test_publishing_a_missing_version_is_refused_and_keeps_the_pointer(tmp_path):
    v = registry.new_version(tmp_path)
    (tmp_path / v).mkdir()
    registry.publish(tmp_path, v)
    with pytest.raises(FileNotFoundError):
        registry.publish(tmp_path, "20990101T000000000Z")
    with pytest.raises(FileNotFoundError):
        registry.publish(tmp_path, "../elsewhere")
    assert registry.current_version(tmp_path) == v


def test_a_reader_never_sees_a_torn_or_empty_pointer(tmp_path):
    names = []
    for i in range(2):
        names.append(registry.new_version(tmp_path, now=1_700_000_000.0 + i))
        (tmp_path / names[-1]).mkdir()
    registry.publish(tmp_path, names[0])
    seen, stop = set(), threading.Event()

    def read():
        while not stop.is_set():
            seen.add(registry.current_version(tmp_path))

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for i in range(300):
            registry.publish(tmp_path, names[i % 2])
    finally:
        stop.set()
        reader.join()
    assert seen <= set(names) and seen  # only ever one of the two complete names
