"""One frozen, typed settings object. Every environment variable the service reads is read here.

Names: ``KAFKA_BOOTSTRAP_SERVERS`` and ``STREAM_RECO_<FIELD>`` (upper-case field name), topic
names as ``STREAM_RECO_TOPIC_<NAME>``. Values are checked (type and range) when read; a
``STREAM_RECO_*`` name that is not a setting is reported, with the closest known name, so a
misspelling does not pass silently.

>>> s = Settings.from_env({"KAFKA_BOOTSTRAP_SERVERS": "k1:9092,k2:9092", "STREAM_RECO_TOP_K": "20"})
>>> s.bootstrap_servers, s.top_k, s.topics.interactions
('k1:9092,k2:9092', 20, 'interactions')
>>> s.broker_url
'kafka://k1:9092;kafka://k2:9092'
>>> Settings.from_env({"STREAM_RECO_TOP_K": "0"})
Traceback (most recent call last):
...
stream_app.settings.SettingsError: STREAM_RECO_TOP_K=0: must be between 1 and 1000
>>> Settings.from_env({"STREAM_RECO_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT"})
Traceback (most recent call last):
...
stream_app.settings.SettingsError: STREAM_RECO_KAFKA_SASL_USERNAME is empty: STREAM_RECO_KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT logs in with a user name
>>> unknown_variables({"STREAM_RECO_TOPK": "5", "PATH": "/bin"})
['STREAM_RECO_TOPK (did you mean STREAM_RECO_TOP_K?)']
"""
from __future__ import annotations

import difflib
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Mapping

from models.domains import DOMAINS
from models.encoder import ENCODERS
from models.kernels import MARK

_ROOT = Path(__file__).resolve().parents[1]


class SettingsError(ValueError):
    """An environment variable holds a value the service cannot use."""


@dataclass(frozen=True)
class Topics:
    interactions: str = "interactions"
    catalog: str = "catalog"
    recommendations: str = "recommendations"
    dead_letters: str = "dead-letters"


# field -> (low, high) for numbers, or the allowed values for strings
_CHECKS: dict[str, tuple | frozenset] = {
    "partitions": (1, 10_000), "replication_factor": (1, 100), "top_k": (1, 1000),
    "batch_max": (1, 100_000), "batch_within_s": (0.001, 60.0), "max_message_bytes": (256, 100 * 2**20),
    "encoder_batch": (1, 65_536), "torch_threads": (1, 1024), "session_timeout_s": (1.0, 3600.0),
    "rebalance_timeout_s": (1.0, 3600.0), "model_poll_s": (0.05, 86_400.0), "cooc_top_m": (1, 100_000), "cooc_half_life_s": (0.0, 1e10), "cooc_apply_every_s": (0.0, 60.0), "cooc_fold_every_s": (0.0, 60.0),
    "web_port": (0, 65_535), "device": frozenset({"auto", "cpu", "cuda"}), "encoder": frozenset(ENCODERS),
    "log_level": frozenset({"debug", "info", "warning", "error", "critical"}),
    "domain": frozenset(DOMAINS), "state_store": frozenset({"memory", "rocksdb"}),
    "cooc_aggregator": frozenset({"process", "thread", "none"}),
    "kafka_security_protocol": frozenset({"PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"}),
    "kafka_sasl_mechanism": frozenset({"PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"}),
}
_FILES = ("kafka_sasl_password_file", "kafka_ssl_cafile", "kafka_ssl_certfile", "kafka_ssl_keyfile")


@dataclass(frozen=True)
class Settings:
    bootstrap_servers: str = ""  # host:port[,host:port] of the Kafka cluster; demo/tests start one when empty
    app_id: str = "stream-reco"  # prefix of the consumer groups and of the changelog topics
    topic_prefix: str = ""  # prepended to every topic name (tests run isolated apps side by side)
    partitions: int = 4  # partitions of the topics and tables this app creates
    replication_factor: int = 1  # of the topics and changelogs this app creates
    top_k: int = 10  # recommendation list length
    batch_max: int = 16_000  # a batch: at most this many interaction records ...
    batch_within_s: float = 0.05  # ... and a fetch waits at most this long for more
    max_message_bytes: int = 65_536  # larger interaction/catalog messages go to the dead-letter topic
    checkpoint: str = ""  # trained fusion checkpoint folder (stream-app train); empty: untrained default
    models_dir: str = ""  # models folder (stream-app retrain --out): serve its `current` version, take each new one
    model_poll_s: float = 5.0  # how often the worker looks at the models folder's `current` pointer
    domain: str = "default"  # event weights, dimensions, freshness: default | ecommerce | news | video
    encoder: str = "minilm"  # text encoder: minilm (the transformer) | static (distilled from it: `stream-app distil-encoder`)
    encoder_path: str = ""  # folder of the static encoder; empty: <cache dir>/encoders/all-MiniLM-L6-v2-static
    device: str = "auto"  # encoder device: auto | cpu | cuda
    encoder_batch: int = 64  # texts per encoder forward pass
    torch_threads: int = 1  # intra-op threads of the encoder; the broker and event loop share the cores
    pin_kernels: bool = True  # train, retrain, evaluate: every library on its AVX2 kernels (read by models.kernels before loading)
    session_timeout_s: float = 10.0  # consumer-group session timeout (failover speed)
    rebalance_timeout_s: float = 60.0  # how long the group waits for a member to finish its batch and re-join
    web_port: int = 6066  # worker web endpoint (/stats, /users/{id})
    web_host: str = "127.0.0.1"  # 0.0.0.0 in a container
    worker_host: str = "127.0.0.1"  # where `replay` finds a worker's web endpoint (compose: worker)
    data_root: str = str(_ROOT.parent / "shared" / "data")  # where demo/bench look for data sets
    schemas_dir: str = str(Path(__file__).resolve().parent / "schemas")  # the JSON Schemas messages are checked against
    cache_dir: str = str(Path.home() / ".cache" / "stream-reco")  # Kafka jars, encoded-vector cache
    kafka_version: str = "4.1.1"  # Apache Kafka version of the local broker (dev tooling)
    state_store: str = "memory"  # where the owned partitions' user states are kept: memory | rocksdb (on disk)
    state_dir: str = ""  # folder of the rocksdb state store; empty: <cache dir>/state
    cooc_top_m: int = 64  # co-engagement neighbours kept per item online (a row is cut back to them past twice as many)
    cooc_half_life_s: float = 0.0  # half-life by event time of the co-engagement counts learned online; 0: no decay
    cooc_apply_every_s: float = 1.0  # a worker applies the followed co-engagement rows to its model at most this often
    cooc_fold_every_s: float = 1.0  # the aggregator folds pair messages at most this often (a row written once per fold)
    cooc_aggregator: str = "process"  # where a worker runs the co-engagement aggregator: process (its child) | thread | none
    kafka_tmpfs: bool = True  # a throw-away local broker keeps its log in /dev/shm (>= 2 GiB free)
    check_output: bool = False  # validate every outgoing recommendation against its schema
    log_level: str = "info"  # debug | info | warning | error
    kafka_security_protocol: str = "PLAINTEXT"  # PLAINTEXT | SSL | SASL_PLAINTEXT | SASL_SSL, for every Kafka client
    kafka_sasl_mechanism: str = "PLAIN"  # PLAIN | SCRAM-SHA-256 | SCRAM-SHA-512 (SASL_* protocols)
    kafka_sasl_username: str = ""  # SASL user name (required by the SASL_* protocols)
    kafka_sasl_password: str = field(default="", repr=False)  # SASL password (or ..._PASSWORD_FILE)
    kafka_sasl_password_file: str = ""  # a file holding the SASL password (one trailing newline ignored)
    kafka_ssl_cafile: str = ""  # CA certificates the broker's certificate is checked against; empty: the system's
    kafka_ssl_certfile: str = ""  # client certificate, PEM (mutual TLS; SSL, SASL_SSL)
    kafka_ssl_keyfile: str = ""  # the client certificate's private key, PEM (empty: in the certificate file)
    kafka_ssl_check_hostname: bool = True  # the broker's certificate must name the host connected to
    http_token: str = field(default="", repr=False)  # when set, the web views want "Authorization: Bearer <it>"
    forward_allow: str = ""  # hosts /users/{id} may be forwarded to (comma-separated patterns, * ?); empty: own host
    topics: Topics = field(default_factory=Topics)

    def __post_init__(self) -> None:
        for name, check in _CHECKS.items():
            value = getattr(self, name)
            if isinstance(check, frozenset):
                if value not in check:
                    raise SettingsError(f"{env_name(name)}={value}: must be one of {', '.join(sorted(check))}")
            elif not check[0] <= value <= check[1]:
                raise SettingsError(f"{env_name(name)}={value}: must be between {check[0]} and {check[1]}")
        self._check_security()

    def _check_security(self) -> None:
        """The Kafka security settings agree with each other, and the files they name exist."""
        protocol = f"{env_name('kafka_security_protocol')}={self.kafka_security_protocol}"
        for name in _FILES:
            path = getattr(self, name)
            if path and not Path(path).is_file():
                raise SettingsError(f"{env_name(name)}={path}: no such file")
        sasl = self.kafka_security_protocol.startswith("SASL_")
        secret = [n for n in ("kafka_sasl_password", "kafka_sasl_password_file") if getattr(self, n)]
        if sasl and not self.kafka_sasl_username:
            raise SettingsError(f"{env_name('kafka_sasl_username')} is empty: {protocol} logs in with a user name")
        if sasl and len(secret) != 1:
            raise SettingsError(f"{protocol}: set exactly one of {env_name('kafka_sasl_password')} and "
                                f"{env_name('kafka_sasl_password_file')}")
        if not sasl and (self.kafka_sasl_username or secret):
            raise SettingsError(f"{env_name((secret or ['kafka_sasl_username'])[0])} is set but {protocol} does "
                                "not log in: use SASL_PLAINTEXT or SASL_SSL")
        tls = self.kafka_security_protocol in ("SSL", "SASL_SSL")
        for name in _FILES[1:]:
            if getattr(self, name) and not tls:
                raise SettingsError(f"{env_name(name)} is set but {protocol} does not use TLS: use SSL or SASL_SSL")
        if self.kafka_ssl_keyfile and not self.kafka_ssl_certfile:
            raise SettingsError(f"{env_name('kafka_ssl_keyfile')} is set without {env_name('kafka_ssl_certfile')}")
        if any(not p.strip() for p in self.forward_allow.split(",")) and self.forward_allow:
            raise SettingsError(f"{env_name('forward_allow')}={self.forward_allow}: an empty host pattern")

    @property
    def static_encoder_path(self) -> str:
        """The static encoder's folder: ``encoder_path``, or its place in the cache."""
        from models.static_encoder import default_static_path

        return self.encoder_path or str(default_static_path(self.cache_dir))

    @property
    def broker_url(self) -> str:
        return ";".join(f"kafka://{h.strip()}" for h in self.bootstrap_servers.split(",") if h.strip())

    def topic(self, name: str) -> str:
        return self.topic_prefix + getattr(self.topics, name)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Settings":
        env = os.environ if env is None else env
        kw: dict = {}
        for f in fields(cls):
            if f.name != "topics" and env_name(f.name) in env:
                kw[f.name] = _cast(f.name, f.type, env[env_name(f.name)])
        topics = {t.name: env[_topic_var(t.name)] for t in fields(Topics) if _topic_var(t.name) in env}
        return cls(**kw, topics=Topics(**topics))

    def env(self) -> dict[str, str]:
        """The environment variables that reproduce these settings (for child processes)."""
        out = {_topic_var(t.name): getattr(self.topics, t.name) for t in fields(Topics)}
        for f in fields(self):
            if f.name != "topics":
                value = getattr(self, f.name)
                out[env_name(f.name)] = str(value).lower() if isinstance(value, bool) else str(value)
        return out


def settings_help() -> str:
    """Every setting as ``NAME (default: ...)  meaning``, from the field comments above."""
    import inspect
    import re

    doc = {m.group(1): m.group(2).strip() for m in
           re.finditer(r"^    (\w+): [^=]+= .*?  # (.*)$", inspect.getsource(Settings), re.M)}
    lines = []
    for f in fields(Settings):
        if f.name == "topics":
            continue
        lines.append(f"  {env_name(f.name)} (default: {str(getattr(Settings, f.name, '')) or 'empty'})")
        lines.append(f"      {doc.get(f.name, '')}")
    lines += [f"  {_topic_var(t.name)} (default: {t.default})" for t in fields(Topics)]
    return "settings (environment variables):\n" + "\n".join(lines)


def env_name(field_name: str) -> str:
    return "KAFKA_BOOTSTRAP_SERVERS" if field_name == "bootstrap_servers" else f"STREAM_RECO_{field_name.upper()}"


def _topic_var(name: str) -> str:
    return f"STREAM_RECO_TOPIC_{name.upper()}"


def known_variables() -> list[str]:
    return [env_name(f.name) for f in fields(Settings) if f.name != "topics"] + \
           [_topic_var(t.name) for t in fields(Topics)]


def unknown_variables(env: Mapping[str, str] | None = None) -> list[str]:
    """``STREAM_RECO_*`` names in ``env`` that are not settings, each with the closest known name."""
    env = os.environ if env is None else env
    known = known_variables()
    out = []
    known.append(MARK)  # set by the offline commands for themselves (models.kernels)
    for name in sorted(n for n in env if n.startswith("STREAM_RECO_") and n not in known):
        close = difflib.get_close_matches(name, known, n=1)
        out.append(f"{name} (did you mean {close[0]}?)" if close else name)
    return out


def _cast(name: str, typ: str, raw: str):
    try:
        if typ == "int":
            return int(raw)
        if typ == "float":
            return float(raw)
        if typ == "bool":
            if raw.strip().lower() not in ("1", "0", "true", "false", "yes", "no"):
                raise ValueError(raw)
            return raw.strip().lower() in ("1", "true", "yes")
    except ValueError:
        raise SettingsError(f"{env_name(name)}={raw!r}: expected {typ}") from None
    return raw
