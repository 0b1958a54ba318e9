"""The fuzz scenario: the corpus of bad messages (tests/support/fuzz.py) with valid events
interleaved, sent through a real broker; every bad one must come back as a correct dead letter."""
from __future__ import annotations

import time
from collections import defaultdict

import orjson

from tests.support.reliability.clients import Msg, Producer, TopicReader, topic_max_message_bytes
from tests.support.reliability.ledger import Ledger, check_recommendations, wait_for_counts
from tests.support.reliability.outcome import ITEM_IDS, REVIEWS, Outcome, all_exited, ev, expect_running

MAX_DEAD_LETTER_BYTES = 1_000_000  # "a dead letter must never exceed 1 MB"
_EXPECTED_ERROR_TYPES = {"malformed": {"malformed_json", "schema_violation"}, "schema": {"schema_violation"},
                         "unknown_item": {"unknown_item"}, "oversized": {"oversized"}}


def fuzz_sequence(seed: int, big_bytes: int, users: int = 30, per_user: int = 10) -> list:
    """The fuzz corpus with ``users * per_user`` valid events shuffled in (each user's events stay in
    order) and one valid event last: a list of ``fuzz.Bad`` and event dicts."""
    import random

    from tests.support.fuzz import corpus

    r = random.Random(seed)
    bad = corpus(ITEM_IDS, seed, big_bytes)
    valid = []
    for i in range(per_user):
        for u in range(users):
            kind = r.choice(["click", "click", "favorite", "rating", "review"])
            extra = {"text": r.choice(REVIEWS)} if kind == "review" else {}
            valid.append(ev(f"fz-{u}-{i}", f"fz-{u}", r.choice(ITEM_IDS), 10_000 + i, kind,
                            **({"value": r.choice([1, 2, 3, 4, 5])} if kind == "rating" else {}), **extra))
    out, bi, vi = [], 0, 0
    while bi < len(bad) or vi < len(valid):
        if vi < len(valid) and r.random() < (len(valid) - vi) / (len(bad) - bi + len(valid) - vi):
            out.append(valid[vi])
            vi += 1
        else:
            out.append(bad[bi])
            bi += 1
    out.append(ev("fz-last", "fz-0", ITEM_IDS[-1], 99_999))
    return out


def _check_one_dead_letter(bad, m: Msg, d: dict, validator) -> list[str]:
    """What is wrong with dead letter ``d`` (raw message ``m``) of bad message ``bad``."""
    import base64
    import hashlib

    from tests.support.fuzz import INPUT_LIMIT

    wrong = []
    if not d.get("error_type") or not d.get("error"):
        wrong.append("no reason (error_type/error)")
    elif d["error_type"] not in _EXPECTED_ERROR_TYPES[bad.expect]:
        wrong.append(f"error_type {d['error_type']!r} for a {bad.expect} message ({d['error'][:80]})")
    if len(m.value) > MAX_DEAD_LETTER_BYTES:
        wrong.append(f"dead letter is {len(m.value)} bytes (> {MAX_DEAD_LETTER_BYTES})")
    errors = sorted(validator.iter_errors(d), key=str)
    if errors:
        wrong.append(f"breaks dead_letter schema: {errors[0].message[:120]}")
    key = bad.key.decode() if bad.key is not None else None
    if d.get("key") != key:
        wrong.append(f"key {str(d.get('key'))[:40]!r} != original key {key!r}")
    raw = bad.value or b""
    try:
        text = d.get("original") or ""
        got = text.encode() if d.get("original_encoding") == "utf-8" else base64.b64decode(text, validate=True)
    except Exception as exc:
        return wrong + [f"original does not decode: {exc}"]
    if len(raw) > INPUT_LIMIT or "original_bytes" in d or "original_sha256" in d:  # a prefix, described
        if d.get("original_bytes") != len(raw) or d.get("original_sha256") != hashlib.sha256(raw).hexdigest():
            wrong.append(f"{len(raw)}-byte original without correct original_bytes/original_sha256 "
                         f"(got {d.get('original_bytes')!r}, {str(d.get('original_sha256'))[:16]!r})")
        if not raw.startswith(got) or (len(raw) > INPUT_LIMIT and len(got) >= len(raw)):
            wrong.append(f"original is not a bounded prefix of the {len(raw)}-byte message ({len(got)} bytes)")
    elif got != raw:
        wrong.append(f"original ({len(got)} bytes) is not the message ({len(raw)} bytes)")
    return wrong


def _check_dead_letters(o: Outcome, dl: TopicReader, topic: str, bad_at: dict, valid_at: set) -> None:
    import json
    from collections import Counter
    from pathlib import Path

    import jsonschema

    schema = json.loads((Path(__file__).resolve().parents[3] / "schemas" / "dead_letter.v1.json").read_text())
    validator = jsonschema.Draft202012Validator(schema)
    found: dict[tuple, list] = defaultdict(list)
    for m in dl.messages:
        d = m.obj() if m.value else None
        if isinstance(d, dict) and d.get("topic") == topic:
            found[(d.get("partition"), d.get("offset"))].append((m, d))
    o.dead_lettered = sum(len(found[p]) for p in bad_at if p in found)
    missing = Counter(b.kind for p, b in bad_at.items() if p not in found)
    if missing:
        o.problems.append(f"{sum(missing.values())} of {len(bad_at)} bad messages NOT DEAD-LETTERED, by kind: "
                          f"{dict(missing.most_common())}")
    wrong: dict[str, Counter] = defaultdict(Counter)
    for p, b in bad_at.items():
        for m, d in found.get(p, []):
            for w in _check_one_dead_letter(b, m, d, validator):
                wrong[w][b.kind] += 1
    for w, kinds in sorted(wrong.items(), key=lambda kv: -sum(kv[1].values())):
        o.problems.append(f"{sum(kinds.values())} dead letters: {w}; kinds {dict(kinds.most_common(6))}")
    valid_dl = [d for p in valid_at for _, d in found.get(p, [])]
    if valid_dl:
        o.problems.append(f"{len(valid_dl)} VALID events dead-lettered: "
                          f"{sorted({(d.get('error_type'), str(d.get('error'))[:80]) for d in valid_dl})[:4]}")


def scenario_fuzz(bootstrap: str, worker, seed: int = 7) -> Outcome:
    """>= 1,000 bad messages of 50+ kinds with valid events interleaved: every bad one dead-lettered
    (reason, source position, bounded size), every valid one applied exactly once, worker alive."""
    from collections import Counter

    o, t0 = Outcome("fuzz corpus"), time.monotonic()
    topic = worker.topic("interactions")
    big = 1_000_000 if topic_max_message_bytes(bootstrap, topic) >= 1_000_000 + 1024 else 900_000
    seq = fuzz_sequence(seed, big)
    ledger, p, sent = Ledger(), Producer(bootstrap, "murmur2_random"), []
    for item in seq:
        if isinstance(item, dict):
            sent.append((item, p.send(topic, item["user_id"].encode(), orjson.dumps(item))))
            ledger.record(item, sent[-1][1])
        else:
            sent.append((item, p.send(topic, item.key, item.value)))
    p.flush()
    o.sent = len(sent)
    refused = [(x.kind, len(x.value or b""), d.error) for x, d in sent if d.error]
    if refused:
        o.problems.append(f"the broker refused {len(refused)} messages: {refused[:3]}")
    bad_at = {(d.partition, d.offset): x for x, d in sent if not isinstance(x, dict) and not d.error}
    valid_at = {(d.partition, d.offset) for x, d in sent if isinstance(x, dict)}
    recs, dl = TopicReader(bootstrap, worker.topic("recommendations")), TopicReader(bootstrap, worker.topic("dead_letters"))
    try:
        folded = wait_for_counts(recs, ledger, timeout=120, stall=40, give_up=all_exited(worker))
        o.add(check_recommendations(ledger, folded), "valid events among the bad ones: ")
        applied = Counter(u.rsplit("-", 1)[0][4:] for u in folded if u and u.startswith("bad-"))
        if applied:
            o.problems.append(f"bad messages were APPLIED (recommendations for their users), by kind: {dict(applied)}")

        seen_at, upto = set(), [0]

        def all_there(msgs):  # incremental: only the messages read since the last call
            for m in msgs[upto[0]:]:
                d = m.obj() if m.value else None
                if isinstance(d, dict):
                    seen_at.add((d.get("partition"), d.get("offset")))
            upto[0] = len(msgs)
            return all(pos in seen_at for pos in bad_at)

        dl.until(all_there, timeout=120, stall=40, give_up=all_exited(worker))
        _check_dead_letters(o, dl, topic, bad_at, valid_at)
    finally:
        recs.close()
        dl.close()
    expect_running(o, worker)
    o.seconds = time.monotonic() - t0
    return o
