"""The freshness cost table runs on a small catalogue and names the four cases."""
from __future__ import annotations

from stream_app.dev.freshness_cost import main


def test_the_table_has_the_four_cases(capsys):
    assert main(["--items", "3000", "--repeat", "2"]) == 0
    out = capsys.readouterr().out
    assert "3,000 items" in out
    for case in ("nothing moved", "the clock moved, no item came out", "another item came out", "an item was added"):
        assert f"| {case} |" in out
