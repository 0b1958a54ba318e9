"""The result of ``stream_app.dev.retrain_bench``: figures from what its run collected, and the
markdown tables it prints."""
from __future__ import annotations

from stream_app.dev.bench import markdown_table
from stream_app.dev.retrain_score import counter_delta, exactly_once, hit_rates, judge_all, parse_judged_counters


def _swaps(metrics_text: str) -> dict[str, int]:
    out = {}
    for line in metrics_text.splitlines():
        if line.startswith("stream_reco_model_swaps_total{"):
            outcome = line.split('outcome="', 1)[1].split('"', 1)[0]
            out[outcome] = int(float(line.rsplit(" ", 1)[1]))
    return out


def _figures(events: list[dict], cuts: list[int], lists: dict, top_k: int) -> dict:
    """hit@K over the last 30 % and per 10 % slice, overall and per model version."""
    judged = judge_all(events, lists, top_k)
    bounds = [cuts[1], cuts[2], cuts[3], len(events)]
    names = ["70-100 %", "70-80 %", "80-90 %", "90-100 %"]
    spans = [(bounds[0], bounds[3])] + list(zip(bounds, bounds[1:]))
    out = {}
    for name, (a, b) in zip(names, spans):
        ids = [ev["event_id"] for ev in events[a:b]]
        out[name] = hit_rates(judged[i] for i in ids if i in judged)
    return out


def summarise(dataset: str, events: list[dict], cuts: list[int], initial: dict, measured: dict, top_k: int) -> dict:
    """The JSON result and its tables (``table``)."""
    lines = measured["lists"]
    figures = {line: _figures(events, cuts, lists, top_k) for line, lists in lines.items()}
    tail = events[cuts[1]:]
    own = {line: counter_delta(parse_judged_counters(measured["metrics_70"][line]),
                               parse_judged_counters(measured["metrics_end"][line])) for line in lines}
    once = {line: exactly_once(events, lists) for line, lists in lines.items()}
    sent = measured["sent_per_user"]
    for line, got in measured["users_endpoint"].items():
        once[line]["users_endpoint_mismatch"] = sum(1 for u, n in sent.items() if got.get(u) != n)
        once[line]["swaps"] = _swaps(measured["metrics_end"][line])
    hit = {line: {s: f.get("all", {}).get("hit_rate", 0.0) for s, f in fig.items()} for line, fig in figures.items()}
    ratio = {s: (hit["retrained"][s] / hit["frozen"][s]) if hit["frozen"][s] else float("nan") for s in hit["frozen"]}
    result = {"dataset": dataset, "events": len(events), "cuts": cuts, "tail_events": len(tail), "top_k": top_k,
              "initial": initial, "retrains": measured["steps"], "slices": measured["slices"],
              "head": measured["head"], "online": figures, "worker_counters_last_30": own,
              "ratio_retrained_over_frozen": ratio, "exactly_once": once}
    result["table"] = tables(result)
    return result


def tables(r: dict) -> str:
    steps = [r["initial"], *r["retrains"]]
    t1 = markdown_table(
        ["model", "wall s", "events read", "train s", "new NDCG@10 / HR@10", "serving NDCG@10 / HR@10", "gate", "load 1m"],
        [[s["step"], s["wall_s"], s.get("events", 0), s.get("train_s", float("nan")),
          f"{s.get('new_ndcg', 0):.4f} / {s.get('new_hr', 0):.4f}",
          f"{s.get('serving_ndcg', 0):.4f} / {s.get('serving_hr', 0):.4f}",
          ("published" if s.get("published") else "refused") + f" ({s['gate']})", s["load_1m"]] for s in steps])
    on, own, ratio = r["online"], r["worker_counters_last_30"], r["ratio_retrained_over_frozen"]
    t2 = markdown_table(
        ["events", "frozen hit@10", "retrained hit@10", "retrained / frozen", "judged (each line)",
         "frozen MRR@10", "retrained MRR@10"],
        [[span, on["frozen"][span].get("all", {}).get("hit_rate", 0.0), on["retrained"][span].get("all", {}).get("hit_rate", 0.0),
          ratio[span], f"{on['frozen'][span].get('all', {}).get('judged', 0)} / "
                       f"{on['retrained'][span].get('all', {}).get('judged', 0)}",
          on["frozen"][span].get("all", {}).get("mrr", 0.0), on["retrained"][span].get("all", {}).get("mrr", 0.0)]
         for span in on["frozen"]])
    rows = []
    for line in ("frozen", "retrained"):
        for version, f in on[line]["70-100 %"].items():
            if version == "all":
                continue
            w = own[line].get(version, {})
            rows.append([line, version, f["judged"], f["hit_rate"], w.get("judged", 0), w.get("hit_rate", float("nan"))])
    t3 = markdown_table(["line", "serving version", "judged (own consumer)", "hit@10 (own consumer)",
                         "judged (worker /metrics)", "hit@10 (worker /metrics)"], rows)
    t4 = markdown_table(["slice", "events", "rate ev/s", "version published before it", "swap s after publish",
                         "load s", "slice s", "load 1m"],
                        [[s["slice"], s["events"], s["rate"], s["version"] if s["published"] else f"{s['version']} (refused)",
                          s.get("swap_after_s") if s.get("swap_after_s") is not None else "-",
                          s.get("swap_load_s") if s.get("swap_load_s") is not None else "-", s["seconds"], s["load_1m"]]
                         for s in r["slices"]])
    t5 = markdown_table(["line", "users", "events sent", "lost", "doubled", "ids named twice", "ids misnamed",
                         "events_applied regressions", "users' last count wrong", "GET /users mismatch",
                         "swaps (swapped / refused)"],
                        [[line, o["users"], o["events"], o["lost"], o["doubled"], o["named_twice"], o["misnamed"],
                          o["regressions"], o["users_with_wrong_count"], o["users_endpoint_mismatch"],
                          f"{o['swaps'].get('swapped', 0)} / {o['swaps'].get('refused', 0)}"]
                         for line, o in r["exactly_once"].items()])
    return "\n\n".join([
        f"## {r['dataset']}: {r['events']:,} events, cuts at {r['cuts']} (60/70/80/90 %)", "### retrains", t1,
        "### online hit@10, last 30 % (own consumer of the recommendations topics)", t2,
        "### by serving version (own consumer vs the worker's counters)", t3,
        "### slices after each retrain", t4, "### exactly once", t5])
