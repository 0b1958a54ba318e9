"""The message schemas under ``schemas/`` and their examples.

Every schema must be a valid draft 2020-12 document, every example under
``schemas/examples/<schema>/`` must validate, every example under
``schemas/examples/invalid/<schema>/`` must fail for the reason it is named
after, and ``jsonschema`` (used here) and ``jsonschema-rs`` (used by the
worker) must agree on every verdict.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import jsonschema_rs
import pytest
from jsonschema import Draft202012Validator

SCHEMA_DIR = Path(__file__).resolve().parents[1] / "schemas"
EXAMPLES_DIR = SCHEMA_DIR / "examples"
INVALID_DIR = EXAMPLES_DIR / "invalid"
ID_PREFIX = "https://stream-reco.dev/schemas/"

SCHEMA_NAMES = ("interaction", "catalog_item", "recommendation", "dead_letter", "forget", "user_view")

# Each example, and for an invalid one the JSON Schema keyword it must break.
VALID_EXAMPLES: dict[str, tuple[str, ...]] = {
    "interaction": ("click", "rating", "review"),
    "catalog_item": ("movie", "product", "tombstone"),
    "recommendation": ("top3", "empty"),
    "dead_letter": ("malformed_json", "schema_violation", "binary_base64"),
    "forget": ("request", "second_request"),
    "user_view": ("top3", "empty"),
}
INVALID_EXAMPLES: dict[str, dict[str, str]] = {
    "interaction": {
        "rating_without_value": "required",
        "review_without_text": "required",
        "unknown_type": "enum",
        "extra_property": "additionalProperties",
        "value_out_of_range": "maximum",
        "negative_ts": "minimum",
        "ts_not_integer": "type",
        "empty_user_id": "minLength",
        "wrong_schema_id": "const",
        "text_too_long": "maxLength",
    },
    "catalog_item": {
        "missing_title": "required",
        "duplicate_categories": "uniqueItems",
        "negative_price": "minimum",
        "unknown_field": "additionalProperties",
        "deleted_not_boolean": "type",
        "too_many_categories": "maxItems",
    },
    "recommendation": {
        "rank_zero": "minimum",
        "missing_reasons": "required",
        "reason_not_number": "type",
        "weight_above_one": "maximum",
        "wrong_schema_id": "const",
        "negative_events_applied": "minimum",
        "missing_model_version": "required",
    },
    "dead_letter": {
        "unknown_error_type": "enum",
        "missing_key": "required",
        "base64_not_base64": "pattern",
        "negative_offset": "minimum",
        "unknown_encoding": "enum",
    },
    "forget": {
        "missing_user_id": "required",
        "extra_property": "additionalProperties",
    },
    "user_view": {
        "recommendation_schema_id": "const",
        "missing_item_titles": "required",
        "title_not_string": "type",
    },
}

VALID_CASES = [(s, n) for s, names in VALID_EXAMPLES.items() for n in names]
INVALID_CASES = [
    (s, n, kw) for s, cases in INVALID_EXAMPLES.items() for n, kw in cases.items()
]


def _load(path: Path):
    with path.open("rb") as fh:
        return json.loads(fh.read())


def schema_path(name: str) -> Path:
    return SCHEMA_DIR / f"{name}.v1.json"


def load_schema(name: str) -> dict:
    return _load(schema_path(name))


def valid_path(schema: str, name: str) -> Path:
    return EXAMPLES_DIR / schema / f"{name}.json"


def invalid_path(schema: str, name: str) -> Path:
    return INVALID_DIR / schema / f"{name}.json"


def _validator(name: str) -> Draft202012Validator:
    return Draft202012Validator(load_schema(name))


# --------------------------------------------------------------------------
# The schema documents themselves


@pytest.mark.parametrize("name", SCHEMA_NAMES)
def test_schema_is_valid_draft_2020_12(name):
    schema = load_schema(name)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    Draft202012Validator.check_schema(schema)
    assert jsonschema.validators.validator_for(schema) is Draft202012Validator
    # The runtime validator must accept it as well.
    jsonschema_rs.Draft202012Validator(schema)


@pytest.mark.parametrize("name", SCHEMA_NAMES)
def test_schema_id_and_version_agree(name):
    schema = load_schema(name)
    assert schema["$id"] == f"{ID_PREFIX}{name}/v1.json"
    assert schema["properties"]["schema"]["const"] == f"{name}/v1"
    assert schema["type"] == "object"
    assert schema["additionalProperties"] is False


def test_schema_folder_holds_exactly_the_known_schemas():
    found = {p.name for p in SCHEMA_DIR.glob("*.json")}
    assert found == {schema_path(n).name for n in SCHEMA_NAMES}
    for path in SCHEMA_DIR.glob("*.json"):
        assert re.fullmatch(r"[a-z_]+\.v\d+\.json", path.name), path.name


def test_schema_field_required_only_on_produced_messages():
    for name in ("recommendation", "dead_letter", "forget", "user_view"):
        assert "schema" in load_schema(name)["required"]
    for name in ("interaction", "catalog_item"):
        assert "schema" not in load_schema(name)["required"]


# --------------------------------------------------------------------------
# Examples


@pytest.mark.parametrize(("schema", "name"), VALID_CASES)
def test_valid_example_validates(schema, name):
    instance = _load(valid_path(schema, name))
    errors = list(_validator(schema).iter_errors(instance))
    assert not errors, [e.message for e in errors]


@pytest.mark.parametrize(("schema", "name", "keyword"), INVALID_CASES)
def test_invalid_example_fails_for_its_reason(schema, name, keyword):
    instance = _load(invalid_path(schema, name))
    errors = list(_validator(schema).iter_errors(instance))
    assert errors, f"{schema}/{name} unexpectedly validates"
    assert keyword in {e.validator for e in errors}, [
        (e.validator, e.message) for e in errors
    ]
    # Exactly one defect per file, so the file name says why it fails.
    assert len(errors) == 1, [(e.validator, e.message) for e in errors]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(instance, load_schema(schema), cls=Draft202012Validator)


@pytest.mark.parametrize("schema", SCHEMA_NAMES)
def test_each_schema_has_examples(schema):
    assert len(VALID_EXAMPLES[schema]) >= 2
    assert len(INVALID_EXAMPLES[schema]) >= 1


def test_every_example_file_is_listed():
    """No example on disk escapes the tables above, and none listed is missing."""
    on_disk_valid = {
        (p.parent.name, p.stem)
        for p in EXAMPLES_DIR.glob("*/*.json")
        if p.parent.name != "invalid"
    }
    on_disk_invalid = {(p.parent.name, p.stem) for p in INVALID_DIR.glob("*/*.json")}
    assert on_disk_valid == set(VALID_CASES)
    assert on_disk_invalid == {(s, n) for s, n, _ in INVALID_CASES}
    # Nothing stray (other extensions, deeper folders, unknown schema folders).
    every_file = {p for p in EXAMPLES_DIR.rglob("*") if p.is_file()}
    listed = {valid_path(s, n) for s, n in VALID_CASES} | {
        invalid_path(s, n) for s, n, _ in INVALID_CASES
    }
    assert every_file == listed


def test_readme_lists_every_example():
    readme = (SCHEMA_DIR / "README.md").read_text(encoding="utf-8")
    mentioned = set(re.findall(r"`(examples/[\w/.-]+\.json)`", readme))
    expected = {
        valid_path(s, n).relative_to(SCHEMA_DIR).as_posix() for s, n in VALID_CASES
    } | {invalid_path(s, n).relative_to(SCHEMA_DIR).as_posix() for s, n, _ in INVALID_CASES}
    assert mentioned == expected
    for name in SCHEMA_NAMES:
        assert f"`{schema_path(name).name}`" in readme
        assert f"`{ID_PREFIX}{name}/v1.json`" in readme


# --------------------------------------------------------------------------
# jsonschema-rs (the worker's validator) agrees with jsonschema


ALL_CASES = [(s, valid_path(s, n), True) for s, n in VALID_CASES] + [
    (s, invalid_path(s, n), False) for s, n, _ in INVALID_CASES
]


@pytest.mark.parametrize(
    ("schema", "path", "expected"),
    ALL_CASES,
    ids=[f"{s}:{'valid' if ok else 'invalid'}:{p.stem}" for s, p, ok in ALL_CASES],
)
def test_jsonschema_rs_gives_same_verdict(schema, path, expected):
    document = load_schema(schema)
    instance = _load(path)
    py_verdict = Draft202012Validator(document).is_valid(instance)
    assert py_verdict is expected

    auto = jsonschema_rs.validator_for(document)
    explicit = jsonschema_rs.Draft202012Validator(document)
    assert isinstance(auto, jsonschema_rs.Draft202012Validator)
    assert auto.is_valid(instance) is expected
    assert explicit.is_valid(instance) is expected
    rs_errors = list(explicit.iter_errors(instance))
    assert bool(rs_errors) is not expected
    if expected:
        explicit.validate(instance)
    else:
        with pytest.raises(jsonschema_rs.ValidationError):
            explicit.validate(instance)


def test_conditional_requirements_follow_type():
    """`value` is required only for ratings, `text` only for reviews."""
    validator = _validator("interaction")
    rs = jsonschema_rs.validator_for(load_schema("interaction"))
    base = {"event_id": "e", "user_id": "u", "item_id": "i", "ts": 0}
    cases = [
        ({"type": "click"}, True),
        ({"type": "favorite"}, True),
        ({"type": "click", "value": 4}, True),
        ({"type": "rating"}, False),
        ({"type": "rating", "value": 1}, True),
        ({"type": "rating", "value": 5.0}, True),
        ({"type": "rating", "value": 0.5}, False),
        ({"type": "review"}, False),
        ({"type": "review", "text": ""}, True),
        ({"type": "review", "text": "good", "value": 2.5}, True),
        ({"type": "rating", "value": True}, False),
    ]
    for extra, expected in cases:
        instance = {**base, **extra}
        assert validator.is_valid(instance) is expected, instance
        assert rs.is_valid(instance) is expected, instance


def test_dead_letter_nullable_fields_and_base64():
    validator = _validator("dead_letter")
    rs = jsonschema_rs.validator_for(load_schema("dead_letter"))
    base = _load(valid_path("dead_letter", "binary_base64"))
    cases = [
        ({}, True),
        ({"key": "k", "schema_id": f"{ID_PREFIX}catalog_item/v1.json"}, True),
        ({"original": ""}, True),
        ({"original": "YWJj"}, True),
        ({"original": "YWJjZA"}, False),  # missing padding
        ({"original": "YW Jj"}, False),
        ({"original_encoding": "utf-8", "original": "not base64 at all"}, True),
        ({"partition": None}, False),
        ({"error": ""}, False),
    ]
    for change, expected in cases:
        instance = {**base, **change}
        assert validator.is_valid(instance) is expected, change
        assert rs.is_valid(instance) is expected, change
