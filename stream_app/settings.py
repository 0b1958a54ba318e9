"""One frozen, typed settings object, read from environment variables (``STREAM_RECO_*``).

>>> s = Settings.from_env({"KAFKA_BOOTSTRAP_SERVERS": "k1:9092,k2:9092", "STREAM_RECO_TOP_K": "20"})
>>> s.bootstrap_servers, s.top_k, s.topics.interactions
('k1:9092,k2:9092', 20, 'interactions')
>>> s.broker_url
'kafka://k1:9092;kafka://k2:9092'
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Mapping


@dataclass(frozen=True)
class Topics:
    interactions: str = "interactions"
    catalog: str = "catalog"
    recommendations: str = "recommendations"
    dead_letters: str = "dead-letters"


@dataclass(frozen=True)
class Settings:
    bootstrap_servers: str = ""  # KAFKA_BOOTSTRAP_SERVERS; empty: start a local broker (demo/tests)
    app_id: str = "stream-reco"  # consumer group and prefix of the changelog topics
    topic_prefix: str = ""  # prepended to every topic name (tests run isolated apps side by side)
    partitions: int = 4  # partitions of the topics and tables this app creates
    replication_factor: int = 1  # of the topics and changelogs this app creates
    top_k: int = 10
    batch_max: int = 1000  # micro-batch: at most this many events ...
    batch_within_s: float = 0.05  # ... or whatever arrived within this many seconds
    max_message_bytes: int = 65_536  # larger interaction/catalog messages go to the dead-letter topic
    checkpoint: str = ""  # trained fusion checkpoint folder (stream-app train); empty: untrained default
    device: str = "auto"  # encoder device: auto | cpu | cuda
    encoder_batch: int = 64
    torch_threads: int = 1  # intra-op threads of the encoder; the broker and event loop share the cores
    session_timeout_s: float = 10.0  # consumer-group session timeout (failover speed)
    web_port: int = 6066
    web_host: str = "127.0.0.1"  # 0.0.0.0 in a container
    worker_host: str = "127.0.0.1"  # where `replay` finds a worker's web endpoint (compose: worker)
    data_root: str = str(Path(__file__).resolve().parents[1].parent / "shared" / "data")
    log_level: str = "info"
    topics: Topics = field(default_factory=Topics)

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
            if f.name == "topics":
                continue
            var = "KAFKA_BOOTSTRAP_SERVERS" if f.name == "bootstrap_servers" else f"STREAM_RECO_{f.name.upper()}"
            if var in env:
                kw[f.name] = _cast(f.type, env[var])
        topics = {t.name: env[f"STREAM_RECO_TOPIC_{t.name.upper()}"]
                  for t in fields(Topics) if f"STREAM_RECO_TOPIC_{t.name.upper()}" in env}
        return cls(**kw, topics=Topics(**topics))

    def env(self) -> dict[str, str]:
        """The environment variables that reproduce these settings (for child processes)."""
        out = {}
        for f in fields(self):
            if f.name == "topics":
                for t in fields(Topics):
                    out[f"STREAM_RECO_TOPIC_{t.name.upper()}"] = getattr(self.topics, t.name)
                continue
            var = "KAFKA_BOOTSTRAP_SERVERS" if f.name == "bootstrap_servers" else f"STREAM_RECO_{f.name.upper()}"
            out[var] = str(getattr(self, f.name))
        return out


def _cast(typ: str, raw: str):
    if typ == "int":
        return int(raw)
    if typ == "float":
        return float(raw)
    return raw
