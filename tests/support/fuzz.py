"""A deterministic corpus of bad ``interactions`` messages (none of them may change any user's state).

    msgs = corpus(items=["it00", "it01"], seed=7)      # list[Bad], same bytes for the same arguments
    {m.kind for m in msgs}                             # 50+ kinds; >= 1,000 messages

Every message has its own user id ``bad-<kind>-<n>`` (so a bad message that is wrongly applied
shows up as a recommendation for a ``bad-`` user, named by its kind), a key (mostly that user id,
sometimes none) and a value. ``expect`` says why it is bad:

- ``malformed``: not parseable by a strict JSON parser (not UTF-8, syntax, NaN/Infinity tokens,
  duplicate object keys, nesting deeper than parsers allow, empty or null value);
- ``schema``: strict JSON, but breaks ``schemas/interaction.v1.json`` (types, missing or extra
  fields, ranges, lengths, not an object);
- ``unknown_item``: a valid event whose ``item_id`` is not in ``items``;
- ``oversized``: larger than the worker's input limit (64 KiB): 70 KB, 300 KB and ``big_bytes``
  (1 MB by default; the caller lowers it when the broker would refuse it), UTF-8 and binary.

``tests/stream_app/dev/test_fuzz_corpus.py`` checks those claims message by message.
"""
from __future__ import annotations

import json
import random
from dataclasses import dataclass
from typing import Callable, Sequence

INPUT_LIMIT = 65_536  # the worker's default STREAM_RECO_MAX_MESSAGE_BYTES


@dataclass(frozen=True)
class Bad:
    kind: str
    expect: str  # malformed | schema | unknown_item | oversized
    key: bytes | None
    value: bytes | None


def _j(obj) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def _without(field: str):
    return lambda r, e: _j({k: v for k, v in e.items() if k != field})


def _with(field: str, make: Callable[[random.Random], object]):
    return lambda r, e: _j({**e, field: make(r)})


def _nested(depth: int, leaf) -> object:
    for _ in range(depth):
        leaf = [leaf]
    return leaf


def _sized(e: dict, size: int) -> bytes:
    """A valid event padded (in ``context``) to exactly ``size`` bytes."""
    base = _j({**e, "context": {"pad": ""}})
    return _j({**e, "context": {"pad": "x" * (size - len(base))}})


def _binary(r: random.Random, size: int) -> bytes:
    return b"\xff\xfe\x00" + r.randbytes(size - 3)


def _dup_keys(r, e) -> bytes:
    text = _j(e).decode()
    field = r.choice(["user_id", "item_id", "event_id", "type"])
    other = {"user_id": '"someone-else"', "item_id": '"it-other"', "event_id": '"ev-other"',
             "type": '"favorite"'}[field]
    return (text[:-1] + f',"{field}":{other}}}').encode()


# kind -> (expect, how many, make(rng, valid_event) -> value bytes or None)
MALFORMED: dict[str, tuple[int, Callable]] = {
    "truncated_json": (22, lambda r, e: (v := _j(e))[: r.randrange(1, len(v) - 1)]),
    "trailing_garbage": (22, lambda r, e: _j(e) + r.choice([b"}", b"]]", b"x", b",{}", b"\x00"])),
    "single_quotes": (22, lambda r, e: _j(e).replace(b'"', b"'")),
    "unquoted_keys": (22, lambda r, e: b"{" + b",".join(k.encode() + b":" + _j(v) for k, v in e.items()) + b"}"),
    "trailing_comma": (22, lambda r, e: _j(e)[:-1] + b",}"),
    "nan_token": (22, lambda r, e: _j({**e, "type": "rating", "value": 1}).replace(b'"value":1', b'"value":NaN')),
    "infinity_token": (22, lambda r, e: _j({**e, "ts": 1}).replace(b'"ts":1', b'"ts":' + r.choice([b"Infinity", b"-Infinity"]))),
    "non_utf8_bytes": (22, lambda r, e: _j(e).replace(b"bad-", b"bad\xff\xfe-", 1)),
    "utf16_encoded": (22, lambda r, e: _j(e).decode().encode(r.choice(["utf-16", "utf-16-le", "utf-16-be"]))),
    "latin1_text": (22, lambda r, e: json.dumps({**e, "type": "review", "text": "très génial, señor"},
                                                  ensure_ascii=False).encode("latin-1")),
    "empty_value": (22, lambda r, e: b""),
    "null_value": (22, lambda r, e: None),
    "whitespace_only": (22, lambda r, e: r.choice([b" ", b"\n", b"\t\r\n ", b"   "])),
    "control_char_in_string": (22, lambda r, e: _j(e).replace(b'"bad-', b'"bad\x01\x07-', 1)),
    "two_concatenated_objects": (22, lambda r, e: _j(e) + r.choice([b"\n", b" ", b""]) + _j(e)),
    "unterminated_string": (22, lambda r, e: b'{"event_id":"' + e["event_id"].encode() + b',"type":"click"}'),
    "binary_random": (22, lambda r, e: _binary(r, r.randrange(8, 2048))),
    "duplicate_keys": (22, _dup_keys),
    "deep_nesting_context": (22, lambda r, e: _j(e)[:-1] + b',"context":' + b'{"a":' * 5000 + b"1" + b"}" * 5000 + b"}"),
    "deep_nesting_array": (22, lambda r, e: b"[" * 20_000 + b"]" * 20_000),  # 40 KB: under the size limit
}

_LONG = lambda r, lo, hi: "y" * r.randrange(lo, hi)  # noqa: E731
SCHEMA: dict[str, tuple[int, Callable]] = {
    "json_null_literal": (22, lambda r, e: b"null"),
    "json_scalar": (22, lambda r, e: r.choice([b"1", b"true", b'"an event"', b"-3.5", b"false"])),
    "top_level_array": (22, lambda r, e: _j([e])),
    "missing_event_id": (22, _without("event_id")),
    "missing_user_id": (22, _without("user_id")),
    "missing_item_id": (22, _without("item_id")),
    "missing_ts": (22, _without("ts")),
    "missing_type": (22, _without("type")),
    "rating_without_value": (22, lambda r, e: _j({**{k: v for k, v in e.items() if k != "value"}, "type": "rating"})),
    "review_without_text": (22, lambda r, e: _j({**e, "type": "review"})),
    "wrong_type_event_id": (22, _with("event_id", lambda r: r.choice([7, None, ["e"], {"id": "e"}, True]))),
    "wrong_type_user_id": (22, _with("user_id", lambda r: r.choice([42, None, ["u"], {"u": 1}, 1.5]))),
    "wrong_type_item_id": (22, _with("item_id", lambda r: r.choice([3, None, ["it00"], False]))),
    "wrong_type_ts": (22, _with("ts", lambda r: r.choice(["1700000000000", 1.5, None, [1], True]))),
    "wrong_type_value": (22, lambda r, e: _j({**e, "type": "rating", "value": r.choice(["5", None, [5], True, {}])})),
    "wrong_type_text": (22, lambda r, e: _j({**e, "type": "review", "text": r.choice([5, None, ["good"], {"t": 1}])})),
    "wrong_type_context": (22, _with("context", lambda r: r.choice(["mobile", 3, ["a"], True]))),
    "extra_field": (22, lambda r, e: _j({**e, r.choice(["extra", "userId", "item", "__proto__", "Type"]):
                                        r.choice(["x", 1, None, {"a": 1}])})),
    "type_not_in_enum": (22, _with("type", lambda r: r.choice(["purchase", "CLICK", "", "like", "view"]))),
    "wrong_schema_const": (22, _with("schema", lambda r: r.choice(["interaction/v2", "catalog_item/v1", ""]))),
    "value_out_of_range": (22, lambda r, e: _j({**e, "type": "rating", "value": r.choice([0, 6, -1, 5.0001, 0.99, 1e9])})),
    "ts_negative": (22, _with("ts", lambda r: r.choice([-1, -1_700_000_000_000]))),
    "empty_id": (22, lambda r, e: _j({**e, r.choice(["event_id", "user_id", "item_id"]): ""})),
    "id_too_long": (22, lambda r, e: _j({**e, r.choice(["event_id", "user_id"]): "z" * r.randrange(129, 2000)})),
    "text_too_long": (22, lambda r, e: _j({**e, "type": "review", "text": _LONG(r, 4001, 9000)})),
    "huge_string_field": (22, lambda r, e: _j({**e, r.choice(["item_id", "event_id"]): _LONG(r, 20_000, 60_000)})),
    "deep_nesting_field": (22, _with("user_id", lambda r: _nested(r.randrange(50, 400), "u"))),
}

UNKNOWN: dict[str, tuple[int, Callable]] = {
    "unknown_item": (22, lambda r, e: _j({**e, "item_id": f"no-such-item-{r.randrange(10**6)}"})),
    "unknown_item_unicode": (22, lambda r, e: _j({**e, "item_id": f"电影-{r.randrange(10**6)}-é"})),
}


def oversized(big_bytes: int) -> dict[str, tuple[int, Callable]]:
    return {
        "oversized_70kb": (4, lambda r, e: _sized(e, 70_000)),
        "oversized_300kb": (2, lambda r, e: _sized(e, 300_000)),
        "oversized_1mb": (2, lambda r, e: _sized(e, big_bytes)),
        "oversized_binary_300kb": (2, lambda r, e: _binary(r, 300_000)),
    }


def kinds(big_bytes: int = 1_000_000) -> dict[str, tuple[str, int, Callable]]:
    out = {}
    for expect, table in (("malformed", MALFORMED), ("schema", SCHEMA), ("unknown_item", UNKNOWN),
                          ("oversized", oversized(big_bytes))):
        out.update({k: (expect, n, make) for k, (n, make) in table.items()})
    return out


# Kinds whose value cannot be read as an event at all: sent without a key now and then (nothing
# can re-route them). Kinds that a lenient reader could take for a valid event keep the user key,
# so a dead letter is unambiguously expected at the offset they were produced to.
_MAY_BE_UNKEYED = {k for k in MALFORMED if k != "duplicate_keys"} | set(SCHEMA)


def corpus(items: Sequence[str], seed: int = 7, big_bytes: int = 1_000_000) -> list[Bad]:
    """The bad messages in a seeded, shuffled order."""
    r = random.Random(seed)
    out: list[Bad] = []
    for kind, (expect, count, make) in kinds(big_bytes).items():
        for n in range(count):
            user = f"bad-{kind}-{n}"
            ev = {"event_id": f"{user}-e", "type": r.choice(["click", "favorite", "rating"]), "user_id": user,
                  "item_id": r.choice(list(items)), "ts": 1_700_000_000_000 + r.randrange(10**9)}
            if ev["type"] == "rating":
                ev["value"] = r.choice([1, 2, 3, 4, 5, 3.5])
            key = None if kind in _MAY_BE_UNKEYED and r.random() < 0.2 else user.encode()
            out.append(Bad(kind, expect, key, make(r, ev)))
    r.shuffle(out)
    return out
