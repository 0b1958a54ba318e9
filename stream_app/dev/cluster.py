"""A genuine multi-node Apache Kafka cluster (KRaft) run from the same jars as
``stream_app.dev.broker.LocalKafka``: for the tests of leader fail-over and replication.

Each node is one process, broker and controller at once (``process.roles=broker,controller``);
the controllers of all nodes form one quorum (``controller.quorum.voters`` lists all of them);
every node's log folder is formatted with the same cluster id; each node has free loopback ports
and a folder of its own (under /dev/shm when ``stream_app.dev.broker.scratch_root`` allows).
Topics and the internal topics get ``replicas`` replicas (3) and need 2 of them in sync
(``min.insync.replicas``), so a producer with ``acks=all`` loses nothing when one node dies.

``kill(node)`` ends a node with SIGKILL (no clean shutdown: no leadership hand-over, no flush);
``restart(node)`` starts it again on its folder, ports and configuration.

    with LocalKafkaCluster(size=3) as cluster:
        print(cluster.bootstrap_servers)   # "127.0.0.1:<p1>,127.0.0.1:<p2>,127.0.0.1:<p3>"
        cluster.kill(2)
        cluster.restart(2)
"""
from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from stream_app.dev.broker import (_LOG4J2, _answers, _cluster_id, ensure_jars, free_port, scratch_root,
                                   wait_or_kill)
from stream_app.settings import Settings

log = logging.getLogger(__name__)


def node_properties(node_id: int, ports: dict[int, tuple[int, int]], logs: Path, partitions: int,
                    replicas: int) -> str:
    """The configuration of node ``node_id`` of a cluster whose nodes listen on ``ports``
    (node id -> (client port, controller port))."""
    port, controller = ports[node_id]
    min_isr = replicas // 2 + 1 if replicas > 1 else 1
    voters = ",".join(f"{n}@127.0.0.1:{c}" for n, (_, c) in sorted(ports.items()))
    return "\n".join([
        "process.roles=broker,controller",
        f"node.id={node_id}",
        f"controller.quorum.voters={voters}",
        f"listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}",
        f"advertised.listeners=PLAINTEXT://127.0.0.1:{port}",
        "controller.listener.names=CONTROLLER",
        "inter.broker.listener.name=PLAINTEXT",
        "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        f"log.dirs={logs}",
        f"num.partitions={partitions}",
        f"default.replication.factor={replicas}",
        f"min.insync.replicas={min_isr}",
        "auto.create.topics.enable=true",
        "group.initial.rebalance.delay.ms=0",
        "broker.heartbeat.interval.ms=1000",  # a dead node loses its leaderships after ~4 s, not 9
        "broker.session.timeout.ms=4000",
        f"offsets.topic.replication.factor={replicas}",
        "offsets.topic.num.partitions=1",
        f"transaction.state.log.replication.factor={replicas}",
        f"transaction.state.log.min.isr={min_isr}",
        "transaction.state.log.num.partitions=1",
        f"share.coordinator.state.topic.replication.factor={replicas}",
        f"share.coordinator.state.topic.min.isr={min_isr}",
        "log.cleaner.dedupe.buffer.size=1048577",
        "message.max.bytes=1048588",
        "",
    ])


@dataclass
class Node:
    node_id: int
    port: int
    controller_port: int
    workdir: Path
    proc: subprocess.Popen | None = None
    logfile: object = None
    started_at: float = 0.0
    mark: int = 0  # size of its log when it was last launched

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


@dataclass
class LocalKafkaCluster:
    """``size`` KRaft nodes (broker+controller each) on loopback. Use as a context manager."""

    size: int = 3
    partitions: int = 4
    replicas: int = 3
    heap: str = "384m"
    start_timeout: float = 120.0
    version: str = field(default_factory=lambda: Settings.from_env().kafka_version)
    nodes: dict[int, Node] = field(default_factory=dict, init=False)
    _root: Path | None = field(default=None, init=False, repr=False)

    @property
    def bootstrap_servers(self) -> str:
        return ",".join(n.address for _, n in sorted(self.nodes.items()))

    def node_at(self, port: int) -> Node:
        return next(n for n in self.nodes.values() if n.port == port)

    def start(self) -> "LocalKafkaCluster":
        libs = ensure_jars(self.version)
        self._root = Path(tempfile.mkdtemp(prefix="stream-reco-kafka-cluster-", dir=scratch_root(3 << 30)))
        ports = {i: (free_port(), free_port()) for i in range(1, self.size + 1)}
        cluster_id = _cluster_id()
        try:
            for i, (port, controller) in ports.items():
                node = Node(i, port, controller, self._root / f"node{i}")
                node.workdir.mkdir(parents=True)
                props = node.workdir / "server.properties"
                props.write_text(node_properties(i, ports, node.workdir / "data", self.partitions, self.replicas))
                (node.workdir / "log4j2.properties").write_text(_LOG4J2)
                subprocess.run(self._jvm(libs, node) + ["kafka.tools.StorageTool", "format", "-t", cluster_id,
                                                        "-c", str(props)],
                               check=True, capture_output=True, env=self._env())
                self.nodes[i] = node
            for node in self.nodes.values():  # all at once: each waits for a quorum of the others
                self._launch(libs, node)
            for node in self.nodes.values():
                self._wait_ready(node)
        except BaseException:
            self.stop()
            raise
        log.info("Kafka cluster of %d nodes ready at %s", self.size, self.bootstrap_servers)
        return self

    def kill(self, node_id: int) -> None:
        """SIGKILL: the node dies at once, as in a crash."""
        node = self.nodes[node_id]
        if node.running():
            os.kill(node.proc.pid, signal.SIGKILL)
            node.proc.wait()
        log.info("node %d (%s) killed", node_id, node.address)

    def restart(self, node_id: int, wait: bool = True) -> None:
        node = self.nodes[node_id]
        if node.running():
            raise RuntimeError(f"node {node_id} is running")
        self._launch(ensure_jars(self.version), node)
        if wait:
            self._wait_ready(node)
        log.info("node %d (%s) restarted", node_id, node.address)

    def stop(self) -> None:
        for node in self.nodes.values():
            if node.running():
                node.proc.terminate()
        for node in self.nodes.values():
            if node.proc is not None:
                wait_or_kill(node.proc)
                node.proc = None
            if node.logfile is not None:
                node.logfile.close()
                node.logfile = None
        if self._root is not None:
            shutil.rmtree(self._root, ignore_errors=True)
            self._root = None

    def __enter__(self) -> "LocalKafkaCluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- processes ---------------------------------------------------------------------------
    def _env(self) -> dict:
        return {**os.environ, "KAFKA_HEAP_OPTS": ""}

    def _jvm(self, libs: Path, node: Node) -> list[str]:
        java = shutil.which("java") or "java"
        return [java, "-Xms128m", f"-Xmx{self.heap}", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
                f"-Dlog4j2.configurationFile={node.workdir / 'log4j2.properties'}", "-cp", f"{libs}/*"]

    def _launch(self, libs: Path, node: Node) -> None:
        if node.logfile is not None:
            node.logfile.close()
        node.logfile = open(node.workdir / "broker.log", "ab")
        node.started_at = time.monotonic()
        node.mark = (node.workdir / "broker.log").stat().st_size  # readiness is judged after this offset
        node.proc = subprocess.Popen(self._jvm(libs, node) + ["kafka.Kafka", str(node.workdir / "server.properties")],
                                     stdout=node.logfile, stderr=subprocess.STDOUT, env=self._env(),
                                     start_new_session=True)
        (node.workdir / "pid").write_text(f"{node.proc.pid}\n")

    def _wait_ready(self, node: Node) -> None:
        deadline = time.monotonic() + self.start_timeout
        log_path = node.workdir / "broker.log"
        while time.monotonic() < deadline:
            if node.proc.poll() is not None:
                raise RuntimeError(f"Kafka node {node.node_id} exited with {node.proc.returncode}:\n"
                                   f"{log_path.read_text(errors='replace')[-4000:]}")
            with open(log_path, "rb") as f:
                f.seek(node.mark)
                started = b"Kafka Server started" in f.read()
            if started and _answers("127.0.0.1", node.port):
                return
            time.sleep(0.2)
        raise TimeoutError(f"Kafka node {node.node_id} did not start within {self.start_timeout}s:\n"
                           f"{log_path.read_text(errors='replace')[-4000:]}")
