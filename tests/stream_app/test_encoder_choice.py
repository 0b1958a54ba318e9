"""The text encoder is a setting (STREAM_RECO_ENCODER=minilm|static), a checkpoint names the encoder
of its item vectors, and the vectors of two encoders never meet: a worker refuses a checkpoint or
a published version made with another encoder, and a catalogue record whose vector another
encoder made is encoded again."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson
import pytest

from models import registry
from models.cooc import CoocModel
from models.engine import EncoderMismatch, InterestModel, encoder_kind
from models.static_encoder import StaticEncoder
from stream_app.codec import Codec, encode_item_record
from stream_app.model_watch import load_version
from stream_app.processor import Processor
from stream_app.settings import Settings, SettingsError

STATIC = "all-MiniLM-L6-v2/model2vec-pca256"
WORDS = ["[UNK]", "star", "wars", "jedi", "drama"]


def static_encoder(version: str = STATIC) -> StaticEncoder:
    return StaticEncoder.from_arrays(np.eye(len(WORDS), 4, k=-1, dtype=np.float32), WORDS, version=version)


def checkpoint(path: Path, encoder: str | None, text_dim: int = 4) -> Path:
    m = InterestModel.untrained(text_dim=text_dim, cf_dim=2)
    m.attention.version = path.name
    out = m.attention.save(path, extra={"encoder": encoder} if encoder else {})
    CoocModel().save(out / "cooc.npz")
    return out


def test_the_setting_is_checked_and_names_the_static_folder(tmp_path):
    assert Settings().encoder == "minilm"
    s = Settings.from_env({"STREAM_RECO_ENCODER": "static", "STREAM_RECO_CACHE_DIR": str(tmp_path)})
    assert s.encoder == "static"
    assert s.static_encoder_path == str(tmp_path / "encoders" / "all-MiniLM-L6-v2-static")
    assert Settings(encoder_path="/opt/enc").static_encoder_path == "/opt/enc"
    with pytest.raises(SettingsError, match="STREAM_RECO_ENCODER=bert: must be one of minilm, static"):
        Settings.from_env({"STREAM_RECO_ENCODER": "bert"})
    assert Settings.from_env(s.env()).encoder == "static"  # handed to child processes


def test_a_checkpoint_names_its_encoder_and_refuses_another(tmp_path):
    static = InterestModel.load(checkpoint(tmp_path / "s", STATIC))
    assert static.encoder == STATIC and encoder_kind(static.encoder) == "static"
    static.check_encoder(STATIC, 4)
    with pytest.raises(EncoderMismatch, match="STREAM_RECO_ENCODER=static"):
        static.check_encoder("all-MiniLM-L6-v2", 4)
    legacy = InterestModel.load(checkpoint(tmp_path / "old", None))  # written before checkpoints named it
    assert legacy.encoder == "all-MiniLM-L6-v2"
    with pytest.raises(EncoderMismatch, match="--encoder static"):
        legacy.check_encoder(STATIC, 4)
    with pytest.raises(EncoderMismatch, match="size 4"):
        legacy.check_encoder("all-MiniLM-L6-v2", 384)
    untrained = InterestModel.load(None, text_dim=256)
    assert untrained.encoder is None and untrained.items.dims["text"] == 256
    untrained.check_encoder(STATIC, 256)


def test_the_worker_refuses_a_checkpoint_of_another_encoder(tmp_path, monkeypatch):
    import models.encoder
    from models import features
    from stream_app.worker import build_processor

    monkeypatch.setattr(models.encoder, "build_encoder", lambda **kw: static_encoder())
    monkeypatch.setattr(features, "TextSentiment", lambda: (lambda text: 0.0))
    ckpt = checkpoint(tmp_path / "minilm-ckpt", "all-MiniLM-L6-v2")
    with pytest.raises(SystemExit, match="minilm-ckpt.*encoder 'all-MiniLM-L6-v2'.*STREAM_RECO_ENCODER=minilm"):
        build_processor(Settings(encoder="static", checkpoint=str(ckpt)))
    proc = build_processor(Settings(encoder="static", checkpoint=str(checkpoint(tmp_path / "ok", STATIC))))
    assert proc.model.encoder == STATIC
    untrained = build_processor(Settings(encoder="static")).model  # sized for the encoder, and tied to it
    assert untrained.items.dims["text"] == 4 and untrained.encoder == STATIC


def test_a_published_version_of_another_encoder_is_refused(tmp_path):
    name = "20260101T000000000Z"
    checkpoint(tmp_path / name, "all-MiniLM-L6-v2")
    registry.publish(tmp_path, name)
    with pytest.raises(EncoderMismatch):
        load_version(tmp_path, name, encoder=static_encoder())
    assert load_version(tmp_path, name, encoder=static_encoder("all-MiniLM-L6-v2")).encoder == "all-MiniLM-L6-v2"


def test_catalogue_records_of_another_encoder_are_encoded_again():
    enc = static_encoder()
    proc = Processor(InterestModel.untrained(text_dim=4, cf_dim=2), enc, lambda text: 0.0, Codec.load())
    item = {"item_id": "a", "title": "Star Wars", "categories": ["drama"]}
    written = dict(proc.index_items([item]))
    assert orjson.loads(written["a"])["_enc"] == STATIC
    own = proc.model.items.space("text")[proc.model.items.index["a"]].copy()
    stale = np.array([0.0, 0.0, 0.0, 1.0], np.float32)  # another encoder's vector of the same item
    proc.restore_item(encode_item_record(item, stale))  # no _enc: an all-MiniLM-L6-v2 record
    assert proc.reencoded_items == 1
    np.testing.assert_array_equal(proc.model.items.space("text")[proc.model.items.index["a"]], own)
    proc.restore_item(encode_item_record(item, stale, STATIC))  # its own encoder's: taken as it is
    assert proc.reencoded_items == 1
    np.testing.assert_array_equal(proc.model.items.space("text")[proc.model.items.index["a"]], stale)
