"""Deliberately worse models, to show that the retrain gate refuses them."""
from __future__ import annotations

import shutil

import numpy as np
import orjson

from models import registry
from models.attention import AttentionFusion
from models.offline.retrain import train_new


def randomised(src, models_dir):
    """A copy of a version with its item embeddings and biases drawn at random and the blend on the
    attention alone: a deliberately worse model, as a version of its own."""
    name = registry.new_version(models_dir)
    dst = shutil.copytree(src, models_dir / name)
    with np.load(dst / "fusion.npz") as z:
        w = {k: z[k] for k in z.files}
    rng = np.random.default_rng(0)
    w["item_emb"] = rng.normal(scale=5.0, size=w["item_emb"].shape).astype(np.float32)
    w["item_bias"] = rng.normal(scale=5.0, size=w["item_bias"].shape).astype(np.float32)
    np.savez_compressed(dst / "fusion.npz", **w)
    meta = orjson.loads((dst / "config.json").read_bytes())
    meta.update(blend={"attention": 1.0}, version=name)
    (dst / "config.json").write_bytes(orjson.dumps(meta))
    return name


def garbage_trainer(*args):
    """Trains as usual, then randomises the item embeddings and serves the attention alone."""
    rec = train_new(*args)
    w = dict(rec.attention.w)
    rng = np.random.default_rng(1)
    w["item_emb"] = rng.normal(scale=5.0, size=w["item_emb"].shape).astype(np.float32)
    w["item_bias"] = rng.normal(scale=5.0, size=w["item_bias"].shape).astype(np.float32)
    rec.attention = AttentionFusion(rec.attention.cfg, w, rec.attention.version)
    rec.blend = {"attention": 1.0}
    return rec
