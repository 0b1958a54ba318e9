"""LocalWorker without a broker: environment, port choice and failure reporting."""
from __future__ import annotations

import subprocess
import sys

import pytest

from stream_app.dev.local import LocalWorker, fetch_stats
from stream_app.settings import Settings


def test_child_environment_reproduces_the_settings(tmp_path):
    s = Settings(bootstrap_servers="k:9092", topic_prefix="p-", app_id="a", batch_max=7, web_port=6066)
    w = LocalWorker(s, log_path=tmp_path / "w.log", extra_env={"EXTRA": "1"})
    assert w.settings.web_port != 6066 and w.port == w.settings.web_port  # a free port was chosen
    back = Settings.from_env(w.env)
    assert back == w.settings
    assert w.env["EXTRA"] == "1" and w.command[-2:] == ["stream_app.cli", "worker"]
    assert LocalWorker(s, web_port=7001).port == 7001


def test_the_child_runs_in_the_repository_so_it_imports_this_trees_code(tmp_path):
    w = LocalWorker(Settings(), log_path=tmp_path / "w.log")
    assert (w.cwd / "pyproject.toml").is_file() and (w.cwd / "stream_app" / "cli.py").is_file()
    code = "import stream_app, models; print(stream_app.__file__, models.__file__)"
    out = subprocess.run([sys.executable, "-c", code], cwd=w.cwd, capture_output=True, text=True, check=True).stdout
    assert all(path.startswith(str(w.cwd)) for path in out.split())


def test_a_worker_that_exits_is_reported_with_its_log(tmp_path):
    code = "import sys; print('boom from the worker'); sys.exit(3)"
    w = LocalWorker(Settings(), log_path=tmp_path / "w.log", wrapper=[sys.executable, "-c", code])
    with pytest.raises(RuntimeError, match="exited with 3") as info:
        w.start(timeout=30)
    assert "boom from the worker" in str(info.value)
    assert w.stop() == 3 and not w.running()


def test_stop_before_start_and_stats_of_nothing():
    w = LocalWorker(Settings())
    assert w.stop() is None and w.stats() is None and w.cpu_seconds() is None
    assert fetch_stats("127.0.0.1", w.port) is None
