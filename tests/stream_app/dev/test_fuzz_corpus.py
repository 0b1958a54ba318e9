"""The fuzz corpus of bad interaction messages (tests/support/fuzz.py), without a broker:
big enough, varied enough, deterministic, and every message bad for the reason it claims."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import jsonschema
import pytest

from tests.support.fuzz import INPUT_LIMIT, corpus, kinds

ITEMS = [f"it{i:02d}" for i in range(60)]
SCHEMA = json.loads((Path(__file__).resolve().parents[3] / "schemas" / "interaction.v1.json").read_text())
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)


def _no_constants(name):
    raise ValueError(f"non-JSON token {name}")


def _no_duplicates(pairs):
    keys = [k for k, _ in pairs]
    if len(keys) != len(set(keys)):
        raise ValueError(f"duplicate keys {sorted(k for k, n in Counter(keys).items() if n > 1)}")
    return dict(pairs)


def strict_parse(value: bytes | None):
    """RFC 8259 JSON, strictly: UTF-8, no NaN/Infinity, no duplicate keys, no control characters."""
    if value is None:
        raise ValueError("null value")
    return json.loads(value.decode("utf-8"), parse_constant=_no_constants, object_pairs_hook=_no_duplicates)


@pytest.fixture(scope="module")
def msgs():
    return corpus(ITEMS)


def test_corpus_is_big_and_varied(msgs):
    per_kind = Counter(m.kind for m in msgs)
    assert len(msgs) >= 1000, len(msgs)
    assert len(per_kind) >= 30, sorted(per_kind)
    assert set(per_kind) == set(kinds())
    assert {m.expect for m in msgs} == {"malformed", "schema", "unknown_item", "oversized"}
    sizes = sorted(len(m.value or b"") for m in msgs)
    assert sizes[-1] == 1_000_000 and sum(s >= 300_000 for s in sizes) >= 5, sizes[-6:]
    assert any(m.key is None for m in msgs) and any(m.value is None for m in msgs)
    assert any(m.value == b"" for m in msgs)


def test_corpus_is_deterministic(msgs):
    assert corpus(ITEMS) == msgs
    assert corpus(ITEMS, seed=8) != msgs
    smaller = corpus(ITEMS, big_bytes=900_000)
    assert max(len(m.value or b"") for m in smaller) == 900_000


def test_every_message_is_bad_for_the_reason_it_claims(msgs):
    wrong = []
    for m in msgs:
        try:
            obj, parse_error = strict_parse(m.value), None
        except (ValueError, RecursionError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
            obj, parse_error = None, exc
        schema_ok = parse_error is None and VALIDATOR.is_valid(obj)
        if m.expect == "malformed":
            ok = parse_error is not None and (m.value is None or len(m.value) <= INPUT_LIMIT)
        elif m.expect == "schema":
            ok = parse_error is None and not schema_ok and len(m.value) <= INPUT_LIMIT
        elif m.expect == "unknown_item":
            ok = schema_ok and obj["item_id"] not in ITEMS and len(m.value) <= INPUT_LIMIT
        else:  # oversized: the only fault is the size (or it is binary as well)
            ok = len(m.value) > INPUT_LIMIT and (schema_ok or m.value.startswith(b"\xff"))
        if not ok:
            wrong.append((m.kind, m.expect, parse_error, (m.value or b"")[:80]))
    assert not wrong, f"{len(wrong)} messages are not bad the way they claim: {wrong[:5]}"


def test_every_message_has_its_own_user_and_a_matching_key(msgs):
    per_kind = Counter()
    for m in msgs:
        n = per_kind[m.kind]
        per_kind[m.kind] += 1
        assert m.key in (None, *(f"bad-{m.kind}-{i}".encode() for i in range(n + 50))), (m.kind, m.key)
    assert all(m.key is not None for m in msgs if m.expect in ("unknown_item", "oversized")
               or m.kind == "duplicate_keys")
