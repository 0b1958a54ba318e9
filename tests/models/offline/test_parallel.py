"""Parallel evaluation gives exactly the serial run's figures (both protocols), and every
training stops after a fixed number of epochs or passes unless a seconds cap is asked for, which
the report then names."""
from __future__ import annotations

import json

import pytest

from models.offline.evaluate import run_evaluation
from models.offline.synthetic import generate

MODELS = ["pop", "itemknn", "only:cooc", "only:sequence", "attention", "fused", "fused-no-text"]


def _without_seconds(x):
    """Everything but the wall-clock measurements."""
    if isinstance(x, dict):
        return {k: _without_seconds(v) for k, v in x.items() if "seconds" not in k}
    if isinstance(x, list):
        return [_without_seconds(v) for v in x]
    return x


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return generate("ecommerce", tmp_path_factory.mktemp("data"), seed=0, n_users=60, n_items=40, n_events=700)


@pytest.mark.timeout(600)
@pytest.mark.parametrize("protocol", ["leave-one-out", "cold-start"])
def test_parallel_jobs_give_the_serial_figures(folder, tmp_path, protocol):
    models = [m for m in MODELS if protocol == "leave-one-out" or m != "fused-no-text"]
    runs = {}
    for jobs in (1, 2):
        out = tmp_path / f"jobs{jobs}"
        run_evaluation(folder, out, seed=0, only=models, progress=False, jobs=jobs, sequence_epochs=2, max_passes=1,
                       protocol=protocol)
        runs[jobs] = json.loads((out / "metrics.json").read_text())
        assert json.loads((out / "summary.json").read_text())["stopped_by_time"] == []
    assert sorted(runs[1]["models"]) == sorted(models)
    assert _without_seconds(runs[1]) == _without_seconds(runs[2])
    assert runs[1]["models"]["fused"]["ndcg@10"] > 0


def _hold(flag: str, log: str, name: str) -> str:
    """A job that notes its start, then waits until ``flag`` exists."""
    import time
    from pathlib import Path

    with open(log, "a") as f:
        f.write(name + "\n")
    deadline = time.monotonic() + 120
    while not Path(flag).exists():
        if time.monotonic() > deadline:
            raise TimeoutError(flag)
        time.sleep(0.01)
    return name


def _note(log: str, name: str, value=None):
    with open(log, "a") as f:
        f.write(name + "\n")
    return value


@pytest.mark.timeout(300)
def test_a_free_process_takes_the_waiting_job_of_lowest_priority_with_its_arguments_as_submitted(tmp_path):
    from models.offline.parallel import Jobs

    import time

    log, first, second = (tmp_path / n for n in ("log", "first", "second"))
    log.touch()
    with Jobs(2) as pool:
        try:
            held = [pool.submit(_hold, str(first), str(log), "held-1"),
                    pool.submit(_hold, str(second), str(log), "held-2")]
            value = [1]
            later = pool.submit(_note, str(log), "later", value, priority=2)
            value.append(2)  # after submission: not seen by the job
            soon = [pool.submit(_note, str(log), f"soon-{i}", priority=0) for i in range(2)]
            deadline = time.monotonic() + 120
            while log.read_text().count("held") < 2 and time.monotonic() < deadline:  # both processes busy
                time.sleep(0.01)
            first.touch()  # one process free: the waiting jobs run there one by one
            assert later.result(timeout=120) == [1]
        finally:
            first.touch()
            second.touch()
        assert [f.result(timeout=120) for f in held] == ["held-1", "held-2"]
        assert [s.result(timeout=120) for s in soon] == [None, None]
    assert log.read_text().split()[2:] == ["soon-0", "soon-1", "later"]


def _die() -> None:
    import os

    os._exit(3)


@pytest.mark.timeout(300)
def test_a_job_whose_process_dies_fails_and_so_do_the_jobs_after_it_instead_of_waiting_forever():
    from concurrent.futures.process import BrokenProcessPool

    from models.offline.parallel import Jobs

    with Jobs(2) as pool:
        dead = pool.submit(_die)
        with pytest.raises(BrokenProcessPool):
            dead.result(timeout=120)
        later = pool.submit(_note, "/dev/null", "later")
        with pytest.raises(BrokenProcessPool):
            later.result(timeout=120)


@pytest.mark.timeout(300)
def test_while_this_process_works_one_process_fewer_runs_jobs(tmp_path):
    from models.offline.parallel import Jobs

    log, release = tmp_path / "log", tmp_path / "release"
    log.touch()
    with Jobs(2) as pool:
        try:
            with pool.working_here():
                held = pool.submit(_hold, str(release), str(log), "held")
                waiting = pool.submit(_note, str(log), "waiting", "ran")
                assert not waiting.running() and not waiting.done()  # no free place: it waits
                assert len(pool._waiting) == 1
            assert waiting.result(timeout=120) == "ran"  # the place given back, it runs beside the held job
            assert not held.done()
        finally:
            release.touch()
        assert held.result(timeout=120) == "held"
