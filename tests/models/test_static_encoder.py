"""The static encoder (models.static_encoder) and its distillation (models.offline.distil), on a
tiny transformer made here (a 2-layer BERT over a 60-token vocabulary, seeded weights): the
distillation runs in about a second, the real one (`stream-app distil-encoder`) in minutes."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from models.encoder import build_encoder
from models.static_encoder import MANIFEST, StaticEncoder, StaticEncoderMissing

ROOT = Path(__file__).resolve().parents[2]
WORDS = ("star wars return of the jedi empire strikes back sense and sensibility drama romance comedy "
         "action sci fi war western thriller horror crime mystery animation children musical film noir "
         "documentary fantasy adventure toy story golden eye four rooms get shorty copycat").split()
TEXTS = ["Star Wars (1977) Action|Sci-Fi", "Return of the Jedi", "sense and sensibility drama romance",
         "Toy Story animation children comedy", "a film noir mystery crime", "WAR western"]


def tiny_bert(path: Path) -> Path:
    """A BERT with seeded random weights and a WordPiece vocabulary of ``WORDS``."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    path.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "(", ")", "|", "-"] + sorted(set(WORDS)) + ["##s", "##1"]
    BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)}, do_lower_case=True).save_pretrained(str(path))
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=64)
    BertModel(cfg).eval().save_pretrained(str(path))
    return path


@pytest.fixture(scope="module")
def distilled(tmp_path_factory) -> Path:
    from models.offline.distil import distil_encoder

    base = tmp_path_factory.mktemp("static")
    return distil_encoder(base / "static", tiny_bert(base / "bert"), pca_dims=16, source_name="tiny-bert",
                          threads=1)


def test_distillation_writes_a_named_complete_folder(distilled):
    manifest = json.loads((distilled / MANIFEST).read_text())
    assert manifest["version"] == "tiny-bert/model2vec-pca16" and manifest["dim"] == 16
    assert manifest["source_sha256"] and len(manifest["sha256"]) == 64
    assert not list(distilled.parent.glob("static.tmp-*"))
    enc = StaticEncoder.load(distilled)
    assert enc.version == manifest["version"] and enc.dim == 16 and enc.embeddings.dtype == np.float32


def test_distillation_is_deterministic(distilled, tmp_path):
    from models.offline.distil import distil_encoder, sha256_file

    again = distil_encoder(tmp_path / "again", distilled.parent / "bert", pca_dims=16, source_name="tiny-bert",
                           threads=2)
    assert sha256_file(again / "model.safetensors") == sha256_file(distilled / "model.safetensors")


def test_numpy_path_equals_model2vec_encode(distilled):
    from model2vec import StaticModel

    ours = StaticEncoder.load(distilled).encode(TEXTS)
    theirs = StaticModel.from_pretrained(str(distilled)).encode(TEXTS)
    assert ours.shape == theirs.shape == (len(TEXTS), 16)
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=2e-6)


def test_vectors_are_unit_deterministic_and_in_input_order(distilled):
    enc = StaticEncoder.load(distilled)
    a = enc.encode(TEXTS)
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-6)
    assert np.array_equal(a, StaticEncoder.load(distilled).encode(TEXTS))
    assert np.array_equal(enc.encode(TEXTS[::-1]), a[::-1])
    assert np.array_equal(enc.encode([TEXTS[2]])[0], a[2])  # alone as in a batch


def test_empty_odd_and_unknown_text(distilled):
    enc = StaticEncoder.load(distilled)
    out = enc.encode(["", None, "¿¡ 💥 zzqx", "star wars", "STAR   wars!!", "star wars zzqx 💥"])
    assert out.shape == (6, 16) and out.dtype == np.float32
    assert not out[:3].any()  # nothing known: the zero vector, not NaN
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out[3], out[4], atol=1e-6)  # case and punctuation-insensitive words
    np.testing.assert_allclose(out[3], out[5], atol=1e-6)  # unknown tokens are dropped, not averaged in
    assert enc.encode([]).shape == (0, 16)
    long = " ".join(["star"] * 5000)
    np.testing.assert_allclose(enc.encode([long])[0], enc.encode(["star"])[0], atol=1e-6)


def test_mean_of_token_vectors_on_a_known_table():
    emb = np.array([[9, 9], [1, 0], [0, 1], [3, 4]], dtype=np.float32)
    enc = StaticEncoder.from_arrays(emb, ["[UNK]", "a", "b", "c"])
    assert enc.token_ids(["a b ?", "c"]) == [[1, 2], [3]]
    np.testing.assert_allclose(enc.encode(["a b ?", "c", "a a b"]),
                               [[0.70710677, 0.70710677], [0.6, 0.8], [0.8944272, 0.4472136]], atol=1e-6)


def test_build_encoder_static_and_a_missing_folder(distilled, tmp_path):
    enc = build_encoder(kind="static", static_path=str(distilled))
    assert isinstance(enc, StaticEncoder) and enc.device == "cpu"
    with pytest.raises(StaticEncoderMissing, match="stream-app distil-encoder"):
        build_encoder(kind="static", static_path=str(tmp_path / "none"))
    with pytest.raises(ValueError, match="minilm, static"):
        build_encoder(kind="bert")


def test_serving_the_static_encoder_never_imports_torch(distilled):
    code = ("import sys; from models.encoder import build_encoder; "
            f"e = build_encoder(kind='static', static_path={str(distilled)!r}); e.encode(['star wars']); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers', 'model2vec')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
