"""What an opt-in seconds cap stopped, for the reports.

Every training and search stops after a fixed number of epochs or passes (with early stopping),
so its result is the same on any machine. A seconds cap (``--budget-s``, ``--sequence-budget-s``)
is an opt-in safety; when it stops a step first, the step records ``stopped_by_time`` and the
report lists it: those figures depend on the machine's speed.
"""
from __future__ import annotations


def time_stops(selection: dict) -> list[str]:
    """The selection steps (``FusedRecommender.select``'s report) a seconds cap stopped; empty:
    the result does not depend on the machine."""
    out = ["co-engagement search"] if (selection.get("cooc") or {}).get("stopped_by_time") else []
    seq = selection.get("sequence") or {}
    for m in seq.get("members") or [seq]:
        if m.get("stopped_by_time"):
            out.append(f"sequence model {m.get('kind')}")
    return out


def stopped_by_time(results: dict) -> list[str]:
    """Over every model of a report (``stopped_by_time`` entries): what a seconds cap stopped."""
    return sorted({s for r in results.values() for s in r.get("stopped_by_time", [])})
