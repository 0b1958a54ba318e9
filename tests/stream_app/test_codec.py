"""``Codec.decode`` takes shortcuts for well-formed messages (one parse that also checks the UTF-8,
a validity check before the errors are collected, known keys looked up pre-quoted); every message
must still get exactly what the plain sequence of checks gives: the same object, or the same
rejection with the same reason."""
from __future__ import annotations

import random

import orjson
import pytest

from stream_app.codec import Codec, Rejected, _repeated_key
from tests.support.fuzz import corpus


def reference_decode(codec: Codec, kind: str, raw: bytes | None):
    """The checks one after the other, nothing skipped (what ``decode`` must agree with)."""
    sid = codec.ids[kind]
    if raw is None:
        return Rejected("malformed_json", "empty message value (null)", sid)
    if len(raw) > codec.max_bytes:
        return Rejected("oversized", f"message is {len(raw)} bytes; the limit is {codec.max_bytes}", sid)
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Rejected("malformed_json", f"not UTF-8 text (binary or another encoding): invalid byte "
                                          f"at position {exc.start}", sid)
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return Rejected("malformed_json", f"not valid JSON: {exc}", sid)
    if kind == "interaction" and isinstance(obj, dict) and (obj.get("type") == "forget"
                                                           or obj.get("schema") == "forget/v1"):
        kind, sid = "forget", codec.ids["forget"]
    repeated = _repeated_key(raw)  # always: keys compared as decoded strings
    if repeated is not None:
        return Rejected("malformed_json", f"an object repeats the key {repeated} (ambiguous: which value "
                                          "counts?)", sid)
    try:
        errors = list(codec.validators[kind].iter_errors(obj))
    except ValueError as exc:
        return Rejected("schema_violation", f"cannot be validated: {exc}", sid)
    if errors:
        msg = "; ".join(f"{'/'.join(map(str, e.instance_path)) or '<root>'}: {e.message}" for e in errors[:5])
        return Rejected("schema_violation", msg, sid)
    return obj


GOOD = [
    b'{"event_id":"e1","type":"click","user_id":"u1","item_id":"i1","ts":1}',
    b'{"event_id":"ml-100k-0","type":"rating","user_id":"259","item_id":"255","ts":874724710000,"value":4}',
    '{"event_id":"e2","type":"review","user_id":"u\u00e9","item_id":"i2","ts":5,"text":"caf\u00e9 \U0001F600 \\"x\\""}'.encode(),
    b'{"schema":"forget/v1","type":"forget","event_id":"f","user_id":"u1","ts":1}',
    b'{"event_id":"e3","type":"click","user_id":"u1","item_id":"i1","ts":1,"context":{"page":"home"}}',
]
INSERTS = [b"\xff", b"\xc0\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\x80", b"\xe2\x82", b"\xc3\xa9",
           b"\xf0\x9f\x98\x80", b"\x00", b"\\", b'"', b"{", b"}", b",", b":", b'"ts":2', b'"user_id":"u2",',
           b'"x":1,', b"\\ud800", b"NaN", b"[", b"]", b" "]


def mutations(seed: int, n: int, bases: list[bytes] = GOOD) -> list[bytes]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        b = bytearray(rng.choice(bases))
        for _ in range(rng.randint(1, 3)):
            pos = rng.randint(0, len(b))
            if rng.random() < 0.3:
                del b[pos:pos + rng.randint(1, 4)]
            else:
                b[pos:pos] = rng.choice(INSERTS) if rng.random() < 0.85 else bytes([rng.randrange(256)])
        out.append(bytes(b))
    return out


@pytest.fixture(scope="module")
def codec():
    return Codec.load()


def test_decode_agrees_with_the_plain_checks_on_the_fuzz_corpus(codec):
    msgs = [m.value for m in corpus(items=["it00", "it01"], seed=7, big_bytes=100_000)]
    assert len(msgs) >= 1000
    for raw in msgs + GOOD:
        assert codec.decode("interaction", raw) == reference_decode(codec, "interaction", raw), raw[:200]


def test_decode_agrees_with_the_plain_checks_on_mutated_messages(codec):
    kinds = {"accepted": 0, "rejected": 0}
    for raw in mutations(seed=3, n=20_000):
        got = codec.decode("interaction", raw)
        assert got == reference_decode(codec, "interaction", raw), raw
        kinds["rejected" if isinstance(got, Rejected) else "accepted"] += 1
    assert min(kinds.values()) > 500  # both sides of every shortcut are exercised


def test_catalog_items_decode_the_same_way(codec):
    item = b'{"item_id":"i1","title":"A film","categories":["Drama"]}'
    for raw in [item, item.replace(b"Drama", b"Dr\xffma"), item.replace(b'"title"', b'"title":"B","title"')] + \
            mutations(seed=5, n=3000, bases=[item]):
        assert codec.decode("catalog_item", raw) == reference_decode(codec, "catalog_item", raw)


def interaction(user_key: bytes = b'"user_id"', extra: bytes = b"") -> bytes:
    return b'{"event_id":"e1","type":"click",' + user_key + b':"attacker","item_id":"i1","ts":1' + extra + b"}"


@pytest.mark.parametrize("raw, key", [
    (interaction(extra=b',"user\\u005fid":"victim"'), "user_id"),  # the escaped repeat comes last
    (b'{"event_id":"e1","type":"click","user\\u005fid":"victim","user_id":"a","item_id":"i1","ts":1}', "user_id"),
    (b'{"event_id":"e1","type":"click","\\u0075\\u0073\\u0065\\u0072\\u005f\\u0069\\u0064":"a",'
     b'"user_id":"victim","item_id":"i1","ts":1}', "user_id"),  # every character escaped
    (interaction(extra=b',"item\\u005Fid":"i2"'), "item_id"),  # upper-case hex
    (interaction(extra=b',"item_i\\u0064":"i2"'), "item_id"),
    (interaction(extra=b',"ts":2'), "ts"),
    (b'{"event_id":"e1","type":"click","user_id":"u","item_id":"i1","ts":1,'
     b'"context":{"page":"a","p\\u0061ge":"b"}}', "page"),  # nested
    (b'{"schema":"forget/v1","type":"forget","event_id":"f","user_id":"a","user\\u005fid":"victim","ts":1}',
     "user_id"),  # a forget request
])
def test_keys_repeated_through_escapes_are_dead_lettered(codec, raw, key):
    out = codec.decode("interaction", raw)
    assert isinstance(out, Rejected), out
    assert (out.error_type, out.error) == ("malformed_json",
                                           f"an object repeats the key {key!r} (ambiguous: which value counts?)")
    assert out == reference_decode(codec, "interaction", raw)


def test_catalog_items_with_escaped_repeats_are_dead_lettered(codec):
    raw = b'{"item_id":"i1","title":"t","item\\u005fid":"victim"}'
    out = codec.decode("catalog_item", raw)
    assert isinstance(out, Rejected) and "'item_id'" in out.error, out
    nested = b'{"item_id":"i1","title":"t","attributes":{"a":1,"\\u0061":2}}'
    out = codec.decode("catalog_item", nested)
    assert isinstance(out, Rejected) and "'a'" in out.error, out


@pytest.mark.parametrize("raw", [
    interaction(extra=b',"user_id\\u0000":"victim"'),  # another key ("user_id" + NUL): the schema refuses it
    interaction(extra=b',"user\\u0000_id":"victim"'),
    interaction(extra=b',"user\\ud800_id":"victim"'),  # a lone surrogate
    interaction(extra=b',"user_\\ud83d\\ude00id":"victim"'),  # a surrogate pair: one character
    interaction(user_key=b'"user_id\\u0000"'),
])
def test_look_alike_keys_never_stand_for_user_id(codec, raw):
    out = codec.decode("interaction", raw)
    assert isinstance(out, Rejected), out
    assert out == reference_decode(codec, "interaction", raw)


def test_escaped_keys_that_do_not_repeat_are_accepted(codec):
    out = codec.decode("interaction", b'{"event_id":"e1","type":"click","user\\u005fid":"u1","item_id":"i1","ts":1}')
    assert out == {"event_id": "e1", "type": "click", "user_id": "u1", "item_id": "i1", "ts": 1}
