"""Evaluation report files and table."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from models.offline.report import format_table, validate_metrics, write_report


def _metrics() -> dict:
    return {
        "dataset": "toy",
        "protocol": "leave-one-out",
        "models": {
            "Pop": {"recall@10": 0.25, "ndcg@10": 0.125, "prequential_hit@10": 0.2, "valid_ndcg@10": 0.1,
                    "n_test": np.int64(8)},
            "ItemKNN": {"recall@10": np.float64(0.5), "ndcg@10": 0.3, "prequential_hit@10": float("nan")},
        },
    }


def test_write_report_files(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "run"
    table = write_report(_metrics(), out)

    doc = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert set(doc) == {"dataset", "protocol", "models"}
    assert doc["dataset"] == "toy" and doc["protocol"] == "leave-one-out"
    assert list(doc["models"]) == ["Pop", "ItemKNN"]
    assert doc["models"]["Pop"] == {"recall@10": 0.25, "ndcg@10": 0.125, "prequential_hit@10": 0.2,
                                    "valid_ndcg@10": 0.1, "n_test": 8}
    assert doc["models"]["ItemKNN"]["recall@10"] == 0.5
    assert doc["models"]["ItemKNN"]["prequential_hit@10"] is None  # NaN is written as null

    png = (out / "metrics.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 1000

    printed = capsys.readouterr().out
    assert table in printed
    lines = table.splitlines()
    assert lines[0].split() == ["model", "recall@10", "ndcg@10", "prequential_hit@10", "valid_ndcg@10",
                                "fit_seconds", "n_test_skipped_seen"]
    assert lines[2].split() == ["Pop", "0.2500", "0.1250", "0.2000", "0.1000", "-", "-"]
    assert lines[3].split() == ["ItemKNN", "0.5000", "0.3000", "nan", "-", "-", "-"]
    assert len({len(line) for line in lines}) == 1  # fixed width


def test_table_is_fixed_width_for_long_names() -> None:
    m = _metrics()
    m["models"]["a-very-long-model-name-indeed"] = {"recall@10": 1, "ndcg@10": 1, "prequential_hit@10": 1}
    lines = format_table(m).splitlines()
    assert len({len(line) for line in lines}) == 1
    assert lines[-1].startswith("a-very-long-model-name-indeed  ")


@pytest.mark.parametrize(
    "broken",
    [
        {"dataset": "x", "models": {"M": {"recall@10": 0, "ndcg@10": 0, "prequential_hit@10": 0}}},
        {"dataset": "x", "protocol": "p", "models": {}},
        {"dataset": "x", "protocol": "p", "models": {"M": {"recall@10": 0, "ndcg@10": 0}}},
        {"dataset": "x", "protocol": "p", "models": {"M": {"recall@10": "0", "ndcg@10": 0, "prequential_hit@10": 0}}},
        {"dataset": "x", "protocol": "p", "extra": 1,
         "models": {"M": {"recall@10": 0, "ndcg@10": 0, "prequential_hit@10": 0}}},
    ],
)
def test_invalid_metrics_rejected(broken: dict, tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        validate_metrics(broken)
    with pytest.raises(ValueError):
        write_report(broken, tmp_path / "never")
    assert not (tmp_path / "never").exists()
