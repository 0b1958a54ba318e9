"""Where the tests find the real data sets: STREAM_RECO_DATA_ROOT, else <repo>/../shared/data.
Missing data skips locally and fails under CI=true."""
from __future__ import annotations

import os
from pathlib import Path

import pytest


def data_root() -> Path:
    env = os.environ.get("STREAM_RECO_DATA_ROOT")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


def dataset_dir(name: str) -> Path:
    path = data_root() / name
    if not path.is_dir():
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"data set folder {path} is missing")
        pytest.skip(f"data set folder {path} is missing")
    return path
