"""Evaluation reports: ``metrics.json``, a fixed-width table and a bar chart.

The metrics document has exactly three top-level keys::

    {"dataset": "ml-100k",
     "protocol": "leave-one-out ...",
     "models": {"Pop": {"recall@10": 0.05, "ndcg@10": 0.02, "prequential_hit@10": 0.04, ...}}}

Each model needs ``recall@10``, ``ndcg@10`` and ``prequential_hit@10``; other keys
(for example ``valid_ndcg@10`` or counts) are kept as they are.

>>> print(format_table({"dataset": "toy", "protocol": "p",
...     "models": {"Pop": {"recall@10": 0.5, "ndcg@10": 0.25, "prequential_hit@10": 0.125}}}))
model                  recall@10     ndcg@10  prequential_hit@10  valid_ndcg@10  fit_seconds  n_test_skipped_seen
-----------------------------------------------------------------------------------------------------------------
Pop                       0.5000      0.2500              0.1250              -            -                    -
"""

from __future__ import annotations

import json
import math
from numbers import Number
from pathlib import Path
from typing import Any, Mapping

__all__ = ["REQUIRED_METRICS", "TABLE_COLUMNS", "format_table", "validate_metrics", "write_report"]

#: Keys every model entry must have.
REQUIRED_METRICS: tuple[str, ...] = ("recall@10", "ndcg@10", "prequential_hit@10")
#: Metric columns of the printed table.
TABLE_COLUMNS: tuple[str, ...] = ("recall@10", "ndcg@10", "prequential_hit@10", "valid_ndcg@10", "fit_seconds",
                                  "n_test_skipped_seen")


def _plain(value: Any) -> Any:
    """Convert numpy scalars/arrays and tuples into JSON-ready Python values."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        return _plain(value.tolist())
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, Number):
        if isinstance(value, int):
            return int(value)
        f = float(value)
        return f if math.isfinite(f) else None
    return value


def validate_metrics(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """Check the document's shape and return a JSON-ready copy; ``ValueError`` if wrong."""
    if set(metrics) != {"dataset", "protocol", "models"}:
        raise ValueError(f"metrics must have exactly the keys dataset, protocol, models; got {sorted(metrics)}")
    if not isinstance(metrics["dataset"], str) or not isinstance(metrics["protocol"], str):
        raise ValueError("'dataset' and 'protocol' must be strings")
    models = metrics["models"]
    if not isinstance(models, Mapping) or not models:
        raise ValueError("'models' must be a non-empty mapping of model name to metrics")
    for name, values in models.items():
        if not isinstance(values, Mapping):
            raise ValueError(f"metrics of model {name!r} must be a mapping")
        missing = [key for key in REQUIRED_METRICS if key not in values]
        if missing:
            raise ValueError(f"model {name!r} lacks {missing}")
        for key in REQUIRED_METRICS:
            if isinstance(values[key], bool) or not isinstance(values[key], Number):
                raise ValueError(f"model {name!r}: {key} must be a number")
    return _plain(metrics)


def _cell(value: Any, column: str = "") -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if column.endswith("seconds") and isinstance(value, Number) and not isinstance(value, bool):
        return f"{float(value):.1f}"
    if isinstance(value, Number) and not isinstance(value, bool):
        f = float(value)
        return f"{f:.4f}" if math.isfinite(f) else "nan"
    return "-"


def format_table(metrics: Mapping[str, Any], columns: tuple[str, ...] = TABLE_COLUMNS) -> str:
    """The fixed-width table: one row per model, one column per entry of ``columns``."""
    names = [str(name) for name in metrics["models"]]
    widths = [max([20, *map(len, names)])] + [max(10, len(c)) for c in columns]
    header = f"{'model':<{widths[0]}}" + "".join(f"  {c:>{w}}" for c, w in zip(columns, widths[1:]))
    lines = [header, "-" * len(header)]
    for label, values in zip(names, metrics["models"].values()):
        cells = "".join(f"  {_cell(values.get(c), c):>{w}}" for c, w in zip(columns, widths[1:]))
        lines.append(f"{label:<{widths[0]}}{cells}")
    return "\n".join(lines)


def _bar_chart(metrics: Mapping[str, Any], path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    names = list(metrics["models"])
    series = ("ndcg@10", "recall@10")
    fig = Figure(figsize=(max(5.0, 1.2 * len(names) + 2.0), 4.0), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    width = 0.8 / len(series)
    for s_i, key in enumerate(series):
        values = []
        for name in names:
            v = metrics["models"][name].get(key)
            values.append(float(v) if isinstance(v, Number) and math.isfinite(float(v)) else 0.0)
        xs = [i + (s_i - (len(series) - 1) / 2) * width for i in range(len(names))]
        bars = ax.bar(xs, values, width=width, label=key)
        ax.bar_label(bars, fmt="%.3f", fontsize=7, padding=2)
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=20 if len(names) > 4 else 0, ha="right" if len(names) > 4 else "center")
    ax.set_ylabel("score")
    ax.set_title(f"{metrics['dataset']}: top-10 ranking quality")
    ax.margins(y=0.15)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, format="png")


def write_report(metrics: Mapping[str, Any], out_dir: str | Path, *, quiet: bool = False,
                 columns: tuple[str, ...] = TABLE_COLUMNS) -> str:
    """Write ``metrics.json`` and ``metrics.png`` under ``out_dir`` and print the table (``columns``).

    Non-finite numbers are written as ``null``. Returns the table text.
    """
    doc = validate_metrics(metrics)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(doc, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    _bar_chart(doc, out / "metrics.png")
    table = format_table(metrics, columns)
    if not quiet:
        print(f"dataset: {doc['dataset']}\nprotocol: {doc['protocol']}\n{table}")
    return table
