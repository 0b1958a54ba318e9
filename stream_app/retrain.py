"""Training from the live topics: ``stream-app train --from-kafka`` (once) and ``stream-app
retrain --every DURATION`` (a process of its own that repeats it).

One run reads ``interactions`` and ``catalog`` up to now with the worker's settings (bootstrap
servers, security, topic names: ``stream_app.topic_data``), trains a new version, measures it and
the serving model on the most recent slice of time, writes the version into the models folder
(``--out``) and publishes it only when it beats the serving model (``models.offline.retrain``).

The domain preset is the worker's (``STREAM_RECO_DOMAIN``) unless ``--domain`` names another.
The serving model is, in this order: ``--serving DIR``, the version the models folder's
``current`` pointer names, ``STREAM_RECO_CHECKPOINT``, or the untrained default.

For the workers the models folder is simple to watch (``models.registry``): ``DIR/current`` holds
one line, the name of the version folder to serve, ``DIR/<name>`` is a complete checkpoint
(``InterestModel.load``); version folders appear whole (renamed into place) and never change,
and ``current`` is replaced atomically (``os.replace``) only after the gate passed. A watcher reads
``current`` between batches and loads ``DIR/<name>`` when the name changed.

Times: ``--since``/``--until`` take an ISO date or time (UTC unless it names a zone), epoch
milliseconds, or a duration before now (``90s``, ``30m``, ``12h``, ``7d``); they select events by
their event time (``ts``). ``--holdout`` and ``--every`` take durations.

>>> parse_duration_ms("90s"), parse_duration_ms("1.5h"), parse_duration_ms("2d")
(90000, 5400000, 172800000)
>>> parse_time_ms("2024-01-01"), parse_time_ms("1704067200000"), parse_time_ms("1d", now_ms=100_000_000)
(1704067200000, 1704067200000, 13600000)
"""
from __future__ import annotations

import argparse
import logging
import re
import signal
import time
from datetime import datetime, timezone
from pathlib import Path

from stream_app.settings import Settings

log = logging.getLogger(__name__)

_UNITS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)\s*$")


def parse_duration_ms(text: str) -> int:
    """``90s``, ``30m``, ``12h``, ``7d``, ``1w``, ``250ms`` -> milliseconds (> 0)."""
    m = _DURATION.match(text)
    if not m or float(m.group(1)) <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration such as 90s, 30m, 12h, 7d")
    return int(round(float(m.group(1)) * _UNITS[m.group(2)]))


def parse_time_ms(text: str, now_ms: int | None = None) -> int:
    """An ISO date/time (UTC unless it says), epoch milliseconds, or a duration before now."""
    text = text.strip()
    if text.isdigit():
        return int(text)
    if _DURATION.match(text):
        now = int(time.time() * 1000) if now_ms is None else now_ms
        return now - parse_duration_ms(text)
    try:
        t = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is neither an ISO time, epoch ms, nor a duration") from None
    return int((t if t.tzinfo else t.replace(tzinfo=timezone.utc)).timestamp() * 1000)


def add_options(p: argparse.ArgumentParser) -> None:
    """The options of a run from the topics (``train --from-kafka``, ``retrain``)."""
    p.add_argument("--serving", default=None,
                   help="the serving checkpoint to beat and warm-start from (default: the version the models "
                        "folder's `current` names, else STREAM_RECO_CHECKPOINT, else the untrained default)")
    p.add_argument("--since", default=None, help="only events at or after this time (ISO, epoch ms, or e.g. 7d ago)")
    p.add_argument("--until", default=None, help="only events before this time (ISO, epoch ms, or e.g. 1h ago)")
    p.add_argument("--holdout", type=parse_duration_ms, default=None,
                   help="the recent slice judged on: events within this duration of the newest (e.g. 1d; "
                        "default: the last --recent-fraction of the events)")
    p.add_argument("--recent-fraction", type=float, default=0.1,
                   help="the recent slice as a share of the events, by time (default: %(default)s)")
    p.add_argument("--gate-metric", choices=("ndcg@10", "hr@10"), default="ndcg@10",
                   help="the figure the new model must win on (default: %(default)s)")
    p.add_argument("--margin", type=float, default=0.0,
                   help="publish only when the new figure exceeds the serving one by more than this (absolute; "
                        "default: %(default)s)")
    p.add_argument("--min-ranked", type=int, default=20,
                   help="recent events ranked, at least, for the gate to judge (default: %(default)s)")
    p.add_argument("--max-ranked", type=int, default=5000,
                   help="rank a seeded sample of at most this many recent events (0: all; default: %(default)s)")
    p.add_argument("--warm-start", action="store_true",
                   help="start from the serving checkpoint's weights with smaller budgets (items it never saw "
                        "start from their text vector)")
    p.add_argument("--warm-epochs", type=int, default=4, help="warm start: attention epochs at most (default: %(default)s)")
    p.add_argument("--warm-examples", type=int, default=30_000,
                   help="warm start: train the attention on the newest this many examples (default: %(default)s)")
    p.add_argument("--warm-sequence-epochs", type=int, default=5,
                   help="warm start: epochs at most for the sequence model (default: %(default)s)")
    p.add_argument("--warm-sequence-budget-s", type=float, default=None,
                   help="warm start: opt-in safety cap in seconds for the sequence model (default: none; when it "
                        "fires the model's record says stopped_by_time)")


def _config(settings: Settings, args: argparse.Namespace):
    """The run's configuration; the domain is the worker's (``STREAM_RECO_DOMAIN``) unless
    ``--domain`` names another one."""
    from models.offline.retrain import RetrainConfig

    domain = args.domain if args.domain != "default" else settings.domain
    return RetrainConfig(recent_fraction=args.recent_fraction, holdout_ms=args.holdout, metric=args.gate_metric,
                         margin=args.margin, min_ranked=args.min_ranked, max_ranked=args.max_ranked or None,
                         warm_start=args.warm_start, seed=args.seed, domain=domain, budget_s=args.budget_s,
                         max_passes=args.max_passes, sequence_epochs=args.sequence_epochs,
                         sequence_kind=args.sequence_kind, sequence_budget_s=args.sequence_budget_s,
                         warm_epochs=args.warm_epochs, warm_examples=args.warm_examples,
                         warm_sequence_epochs=args.warm_sequence_epochs,
                         warm_sequence_budget_s=args.warm_sequence_budget_s)


def serving_checkpoint(settings: Settings, models_dir: str | Path, explicit: str | None = None) -> Path | None:
    """The checkpoint that serves now (see the module doc)."""
    from models.registry import current_checkpoint

    if explicit:
        return Path(explicit)
    current = current_checkpoint(models_dir)
    if current is not None:
        return current
    return Path(settings.checkpoint) if settings.checkpoint else None


def run_once(settings: Settings, args: argparse.Namespace) -> dict:
    """Read the topics, retrain, gate, publish; returns the new version's metadata (or why none)."""
    from models.offline.retrain import retrain
    from stream_app.topic_data import load_from_kafka

    if not settings.bootstrap_servers:
        raise SystemExit("KAFKA_BOOTSTRAP_SERVERS is not set: --from-kafka reads the worker's topics")
    t0 = time.perf_counter()
    since = parse_time_ms(args.since) if args.since else None
    until = parse_time_ms(args.until) if args.until else None
    ds, stats = load_from_kafka(settings, since, until)
    read_s = time.perf_counter() - t0
    read = {**stats.to_dict(), "since_ms": since, "until_ms": until, "seconds": round(read_s, 1)}
    if len(ds.interactions) < 2:
        log.warning("only %d usable events on %s: nothing to train on", len(ds.interactions),
                    settings.topic("interactions"))
        return {"skipped": f"{len(ds.interactions)} usable events"}
    serving = serving_checkpoint(settings, args.out, args.serving)
    meta = retrain(ds, args.out, serving, _config(settings, args), read=read)
    if "skipped" not in meta:
        meta["seconds"]["read"] = round(read_s, 1)
        meta["seconds"]["wall"] = round(time.perf_counter() - t0, 1)
        gate = meta["gate"]
        print(f"{meta['path']}: {'published' if gate['publish'] else 'not published'} ({gate['reason']}); "
              f"{read_s:.1f} s reading, {meta['seconds']['wall']:.1f} s in all", flush=True)
    else:
        print(f"no new version: {meta['skipped']}", flush=True)
    return meta


def run_every(settings: Settings, args: argparse.Namespace) -> int:
    """``stream-app retrain``: ``run_once`` every ``--every`` (measured from the start of a run;
    a run that fails is logged and the next one still comes), ``--runs`` times (0: forever).
    SIGTERM stops it at once; a version being written is removed."""
    every_s = args.every / 1000.0
    done = 0
    previous = signal.signal(signal.SIGTERM, _stop)  # a stop (docker stop) ends a run cleanly
    try:
        while True:
            started = time.monotonic()
            try:
                run_once(settings, args)
            except Exception:
                log.exception("retrain failed; trying again in %.0f s", every_s)
            done += 1
            if args.runs and done >= args.runs:
                return 0
            time.sleep(max(0.0, started + every_s - time.monotonic()))
    finally:
        signal.signal(signal.SIGTERM, previous)


def _stop(signum, frame) -> None:
    """SIGTERM: leave as Ctrl-C does (a version being written is removed, the pointer untouched)."""
    raise SystemExit(0)
