"""Where a throw-away local broker keeps its log: /dev/shm when usable, else the temp folder."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from stream_app.dev import broker

pytestmark = pytest.mark.skipif(not Path("/dev/shm").is_dir() and os.environ.get("CI", "").lower() != "true",
                                reason="no /dev/shm on this system")


def test_memory_scratch_unless_turned_off(monkeypatch):
    monkeypatch.delenv("STREAM_RECO_KAFKA_TMPFS", raising=False)
    free = os.statvfs("/dev/shm")
    expected = "/dev/shm" if free.f_bavail * free.f_frsize >= 2 << 30 else None
    assert broker.scratch_root() == expected
    assert broker.scratch_root(min_free=1 << 60) is None  # never more free than that
    monkeypatch.setenv("STREAM_RECO_KAFKA_TMPFS", "false")
    assert broker.scratch_root(min_free=0) is None


def test_folders_of_brokers_that_are_gone_are_removed(monkeypatch, tmp_path):
    monkeypatch.delenv("STREAM_RECO_KAFKA_TMPFS", raising=False)
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    gone = Path("/dev/shm") / f"stream-reco-kafka-test-{os.getpid()}-gone"
    live = Path("/dev/shm") / f"stream-reco-kafka-test-{os.getpid()}-live"
    starting = Path("/dev/shm") / f"stream-reco-kafka-test-{os.getpid()}-starting"
    try:
        for folder, pid in ((gone, done.stdout.strip()), (live, str(os.getpid())), (starting, None)):
            folder.mkdir()
            if pid:
                (folder / "pid").write_text(pid + "\n")
        broker.scratch_root(min_free=0)
        assert not gone.exists()  # its broker exited: the memory it held is given back
        assert live.exists() and starting.exists()  # running, or no pid written yet
    finally:
        for folder in (gone, live, starting):
            subprocess.run(["rm", "-rf", str(folder)], check=True)
