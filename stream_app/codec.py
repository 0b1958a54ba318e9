"""Bytes on the wire <-> checked messages: every consumed message is checked against its schema
here before anything uses it, and whatever fails becomes a ``Rejected`` with the reason (sent on
as a dead letter by ``stream_app.dead_letters``).

>>> codec = Codec.load()
>>> ok = codec.decode("interaction", b'{"event_id":"e1","type":"click","user_id":"u1","item_id":"i1","ts":1}')
>>> ok["user_id"]
'u1'
>>> bad = codec.decode("interaction", b'{"event_id":"e1","type":"rating","user_id":"u1","item_id":"i1","ts":1}')
>>> bad.error_type, "value" in bad.error
('schema_violation', True)
>>> codec.decode("interaction", b"{not json").error_type
'malformed_json'
>>> codec.decode("interaction", b'{"event_id":"e1","type":"click","user_id":"u1","user_id":"u2","item_id":"i","ts":1}').error
"an object repeats the key 'user_id' (ambiguous: which value counts?)"
>>> codec.decode("interaction", b'{"event_id":"e1","type":"click","user_id":"u1","user\\\\u005fid":"u2","item_id":"i","ts":1}').error
"an object repeats the key 'user_id' (ambiguous: which value counts?)"
>>> deep = b'{"event_id":"e1","type":"click","user_id":' + b"[" * 300 + b"]" * 300 + b',"item_id":"i","ts":1}'
>>> codec.decode("interaction", deep).error_type
'schema_violation'
>>> codec.decode("interaction", "{}".encode("utf-16")).error
'not UTF-8 text (binary or another encoding): invalid byte at position 0'
>>> codec.decode("interaction", b'{"schema":"forget/v1","type":"forget","event_id":"f","user_id":"u1","ts":1}')["type"]
'forget'
"""
from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path

import jsonschema_rs
import numpy as np
import orjson

SCHEMAS_DIR = Path(__file__).resolve().parent / "schemas"  # default; the worker passes settings.schemas_dir
SCHEMA_FILES = {
    "interaction": "interaction.v1.json",
    "catalog_item": "catalog_item.v1.json",
    "recommendation": "recommendation.v1.json",
    "dead_letter": "dead_letter.v1.json",
    "forget": "forget.v1.json",
}


@dataclass
class Source:
    """Where a consumed message came from (what its dead letter names)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


@dataclass
class Rejected:
    """Why a message could not be used; becomes a dead letter."""

    error_type: str  # malformed_json | schema_violation | unknown_item | oversized | processing_error
    error: str
    schema_id: str | None = None


class Codec:
    def __init__(self, schemas: dict[str, dict], max_bytes: int = 65_536):
        self.schemas = schemas
        self.ids = {name: s.get("$id", name) for name, s in schemas.items()}
        self.validators = {name: jsonschema_rs.validator_for(s) for name, s in schemas.items()}
        # each known key as it appears quoted in the raw bytes (``_may_repeat_a_key``)
        self._quoted = {name: {k: f'"{k}"'.encode() for k in s.get("properties", {})}
                        for name, s in schemas.items()}
        self.max_bytes = max_bytes

    @classmethod
    def load(cls, directory: str | Path = SCHEMAS_DIR, max_bytes: int = 65_536) -> "Codec":
        d = Path(directory)
        return cls({n: orjson.loads((d / f).read_bytes()) for n, f in SCHEMA_FILES.items()}, max_bytes)

    def decode(self, kind: str, raw: bytes | None) -> dict | Rejected:
        sid = self.ids[kind]
        if raw is None:
            return Rejected("malformed_json", "empty message value (null)", sid)
        if len(raw) > self.max_bytes:
            return Rejected("oversized", f"message is {len(raw)} bytes; the limit is {self.max_bytes}", sid)
        try:  # orjson accepts only valid UTF-8: the text is checked on its own only when this fails
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as bad:
                return Rejected("malformed_json", f"not UTF-8 text (binary or another encoding): invalid byte "
                                                  f"at position {bad.start}", sid)
            return Rejected("malformed_json", f"not valid JSON: {exc}", sid)
        if kind == "interaction" and isinstance(obj, dict) and (obj.get("type") == "forget"
                                                               or obj.get("schema") == "forget/v1"):
            kind, sid = "forget", self.ids["forget"]  # a forget request travels with the user's events
        repeated = _repeated_key(raw) if self._may_repeat_a_key(kind, raw, obj) else None
        if repeated is not None:
            return Rejected("malformed_json", f"an object repeats the key {repeated} (ambiguous: which value "
                                              "counts?)", sid)
        validator = self.validators[kind]
        try:
            if validator.is_valid(obj):  # the common case; the errors are collected only when not
                return obj
            errors = list(validator.iter_errors(obj))
        except ValueError as exc:  # e.g. nesting deeper than the validator's recursion limit
            return Rejected("schema_violation", f"cannot be validated: {exc}", sid)
        if errors:
            msg = "; ".join(f"{'/'.join(map(str, e.instance_path)) or '<root>'}: {e.message}" for e in errors[:5])
            return Rejected("schema_violation", msg, sid)
        return obj

    def _may_repeat_a_key(self, kind: str, raw: bytes, obj) -> bool:
        """Whether the second (standard-library) parse that finds repeated keys is needed: only
        for a nested object, a key the schema does not know, or a known key whose quoted name
        occurs twice (in a flat object of known keys a repeat must show that way; escaped quotes
        inside strings never form ``"name"``). Most messages skip it: first of all those that are
        byte for byte what orjson writes for the parsed object (each key once, whatever the
        nesting), as producers using orjson send them. Keys are compared as decoded strings: a
        message with any backslash (``"user\\u005fid"`` is ``"user_id"``) is parsed again too."""
        try:
            if orjson.dumps(obj) == raw:
                return False
        except orjson.JSONEncodeError:  # e.g. nested deeper than orjson writes
            pass
        if not isinstance(obj, dict) or raw.count(b"{") > 1 or b"\\" in raw:
            return True
        quoted = self._quoted[kind]
        for k in obj:
            q = quoted.get(k)
            if q is None or raw.count(q) > 1:
                return True
        return False

    def check(self, kind: str, obj: dict) -> None:
        """Raise ``jsonschema_rs.ValidationError`` if an outgoing message breaks its own schema
        (the worker checks its recommendations in tests: ``STREAM_RECO_CHECK_OUTPUT``)."""
        self.validators[kind].validate(obj)


def _reject_pairs(pairs: list) -> dict:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set = set()
        raise _DuplicateKey(next(k for k, _ in pairs if k in seen or seen.add(k)))
    return out


class _DuplicateKey(Exception):
    pass


def _repeated_key(raw: bytes) -> str | None:
    """The first key an object of ``raw`` repeats (``repr``, as decoded: escapes resolved), or
    None. orjson keeps the last of repeated keys silently; the standard parser tells us."""
    try:
        json.loads(raw, object_pairs_hook=_reject_pairs)
    except _DuplicateKey as dup:
        return repr(dup.args[0])
    except (ValueError, RecursionError):  # orjson accepted it; deep nesting is the schema's business
        return None
    return None


def _has_duplicate_keys(raw: bytes) -> bool:
    return _repeated_key(raw) is not None


def encode_item_record(item: dict, vec: np.ndarray, encoder: str | None = None) -> bytes:
    """A catalogue-table record: the item message plus its encoded vector (no re-encoding on
    recovery) and the name of the encoder that made it (``_enc``; a record without one holds an
    all-MiniLM-L6-v2 vector)."""
    extra = {"_enc": encoder} if encoder else {}
    return orjson.dumps({**item, "_vec": base64.b64encode(vec.astype(np.float32).tobytes()).decode(), **extra})


def decode_item_record(record: bytes) -> tuple[dict, np.ndarray]:
    obj = orjson.loads(record)
    vec = np.frombuffer(base64.b64decode(obj.pop("_vec")), dtype=np.float32)
    return obj, vec
