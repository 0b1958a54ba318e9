"""A genuine single-node Apache Kafka 4.x broker (KRaft) run from Maven Central jars.

Used by the tests and by the demo when ``KAFKA_BOOTSTRAP_SERVERS`` is unset. The jars are
resolved once with Maven into a cache outside the repository (``~/.cache/stream-reco/kafka/<version>``)
and reused afterwards; each broker gets a fresh temporary log dir and free loopback ports.

A throw-away broker (no ``workdir`` given) keeps its log in memory, under /dev/shm, when that is
a tmpfs with at least 2 GiB free and ``STREAM_RECO_KAFKA_TMPFS`` is not ``false``. On a disk
(ext4 here) the first appends to a new partition wait 100-500 ms while the kernel allocates
blocks for the freshly mapped index files, which shows as a latency spike at the start of every
benchmark run on new topics; BENCHMARKS.md has the measurements. A broker given a ``workdir``
keeps its data there, on whatever file system that is.

    with LocalKafka() as kafka:
        print(kafka.bootstrap_servers)   # "127.0.0.1:<port>"

With ``sasl_users`` ({name: password}) the client port is a ``SASL_PLAINTEXT`` listener instead:
PLAIN (the users in the listener's JAAS config) and SCRAM-SHA-256/512 (credentials written into
the metadata when the log is formatted, ``--add-scram``); the controller and inter-broker
listeners stay PLAINTEXT, on ports of their own.

    with LocalKafka(sasl_users={"alice": "alice-secret"}) as kafka:
        ...  # clients log in with security_protocol="SASL_PLAINTEXT", sasl_mechanism="PLAIN" or "SCRAM-SHA-256"
"""
from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from stream_app.settings import Settings

log = logging.getLogger(__name__)

SCRAM_MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-512")

# Kafka 4.1 ships log4j-core 2.24.3 and slf4j-api 1.7.x, so the matching binding is log4j-slf4j-impl.
LOG4J_VERSION = "2.24.3"

_POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.stream-reco</groupId><artifactId>kafka-runtime</artifactId><version>1</version>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>{kafka}</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-core</artifactId><version>{log4j}</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j-impl</artifactId><version>{log4j}</version></dependency>
  </dependencies>
</project>
"""

_LOG4J2 = """status = warn
appender.console.type = Console
appender.console.name = STDOUT
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.stdout.ref = STDOUT
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.apache.name = org.apache.kafka
logger.apache.level = WARN
"""


def scratch_root(min_free: int = 2 << 30) -> str | None:
    """/dev/shm when it is usable for a throw-away broker's log (tmpfs, ``min_free`` bytes free,
    ``STREAM_RECO_KAFKA_TMPFS`` not false), else None (the system's temporary folder). Folders
    left there by brokers that are no longer running are removed first: they hold memory."""
    root = Path("/dev/shm")
    if not Settings.from_env().kafka_tmpfs or not root.is_dir() or not os.access(root, os.W_OK):
        return None
    for stale in root.glob("stream-reco-kafka-*"):
        pid_file = stale / "pid"
        try:
            pid = int(pid_file.read_text())
        except (OSError, ValueError):
            continue  # starting, or not ours to judge
        if not _alive(pid):
            shutil.rmtree(stale, ignore_errors=True)
    st = os.statvfs(root)
    return str(root) if st.f_bavail * st.f_frsize >= min_free else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        pass
    return True


def cache_root() -> Path:
    return Path(Settings.from_env().cache_dir)


def ensure_jars(version: str | None = None) -> Path:
    """Resolve the broker's runtime classpath into the cache once; return the libs folder."""
    version = version or Settings.from_env().kafka_version
    root = cache_root() / "kafka" / version
    libs = root / "libs"
    marker = root / ".complete"
    if marker.exists():
        return libs
    if shutil.which("mvn") is None:
        raise RuntimeError("Maven (mvn) is needed once to fetch the Kafka jars; install it or set KAFKA_BOOTSTRAP_SERVERS")
    root.mkdir(parents=True, exist_ok=True)
    (root / "pom.xml").write_text(_POM.format(kafka=version, log4j=LOG4J_VERSION))
    log.info("fetching Apache Kafka %s jars from Maven Central into %s", version, libs)
    tmp_libs = root / "libs.partial"
    shutil.rmtree(tmp_libs, ignore_errors=True)
    subprocess.run(
        ["mvn", "-q", "-B", "-f", str(root / "pom.xml"), "dependency:copy-dependencies",
         "-DincludeScope=runtime", f"-DoutputDirectory={tmp_libs}"],
        check=True,
    )
    shutil.rmtree(libs, ignore_errors=True)
    tmp_libs.rename(libs)
    marker.write_text(version)
    return libs


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


@dataclass
class LocalKafka:
    """A throw-away KRaft broker+controller on loopback. Use as a context manager."""

    version: str = field(default_factory=lambda: Settings.from_env().kafka_version)
    partitions: int = 4
    heap: str = "512m"
    start_timeout: float = 90.0
    port: int = 0
    workdir: Path | None = None
    jvm_opts: tuple[str, ...] = ()  # extra JVM options (a flight recording, say)
    sasl_users: dict[str, str] | None = None  # name -> password: the client port asks for a SASL login
    _proc: subprocess.Popen | None = field(default=None, init=False, repr=False)
    _owns_dir: bool = field(default=False, init=False, repr=False)

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> "LocalKafka":
        """Start the broker. With a ``workdir`` that already holds a broker's data (an earlier
        run with the same folder), that data is kept: topics, offsets and tables survive."""
        libs = ensure_jars(self.version)
        if self.workdir is None:
            self.workdir = Path(tempfile.mkdtemp(prefix="stream-reco-kafka-", dir=scratch_root()))
            self._owns_dir = True
        self.workdir = Path(self.workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        logs = self.workdir / "data"
        formatted = (logs / "meta.properties").exists()
        ports_file = self.workdir / "ports"
        saved = ports_file.read_text().split() if formatted and ports_file.exists() else []
        if saved:  # same controller port: the quorum config must not change
            controller = int(saved[1])
            self.port = self.port or int(saved[0])
        else:
            controller = free_port()
        self.port = self.port or free_port()
        internal = int(saved[2]) if len(saved) > 2 else free_port()  # inter-broker, beside a SASL port
        ports_file.write_text(f"{self.port} {controller} {internal}\n")
        props = self.workdir / "server.properties"
        props.write_text("\n".join([
            "process.roles=broker,controller",
            "node.id=1",
            f"controller.quorum.voters=1@127.0.0.1:{controller}",
            *self._listeners(controller, internal),
            "controller.listener.names=CONTROLLER",
            "inter.broker.listener.name=PLAINTEXT",
            f"log.dirs={logs}",
            f"num.partitions={self.partitions}",
            "auto.create.topics.enable=true",
            "group.initial.rebalance.delay.ms=0",
            "offsets.topic.replication.factor=1",
            "offsets.topic.num.partitions=1",
            "transaction.state.log.replication.factor=1",
            "transaction.state.log.min.isr=1",
            "transaction.state.log.num.partitions=1",
            "share.coordinator.state.topic.replication.factor=1",
            "share.coordinator.state.topic.min.isr=1",
            "log.cleaner.dedupe.buffer.size=1048577",
            "message.max.bytes=1048588",
            "",
        ]))
        log4j = self.workdir / "log4j2.properties"
        log4j.write_text(_LOG4J2)
        java = shutil.which("java") or "java"
        cp = f"{libs}/*"
        env = {**os.environ, "KAFKA_HEAP_OPTS": ""}
        jvm = [java, "-Xms128m", f"-Xmx{self.heap}", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
               f"-Xlog:gc:file={self.workdir / 'gc.log'}:uptime,time",
               *self.jvm_opts, f"-Dlog4j2.configurationFile={log4j}", "-cp", cp]
        if not formatted:
            scram = [a for name, pw in (self.sasl_users or {}).items()
                     for mech in SCRAM_MECHANISMS for a in ("--add-scram", f"{mech}=[name={name},password={pw}]")]
            subprocess.run(jvm + ["kafka.tools.StorageTool", "format", "-t", _cluster_id(), "-c", str(props), *scram],
                           check=True, capture_output=True, env=env)
        self._logfile = open(self.workdir / "broker.log", "wb")
        self._proc = subprocess.Popen(jvm + ["kafka.Kafka", str(props)], stdout=self._logfile,
                                      stderr=subprocess.STDOUT, env=env, start_new_session=True)
        (self.workdir / "pid").write_text(f"{self._proc.pid}\n")
        self._wait_ready()
        log.info("Kafka %s ready at %s", self.version, self.bootstrap_servers)
        return self

    def _listeners(self, controller: int, internal: int) -> list[str]:
        """server.properties lines of the listeners: the client port (PLAINTEXT, or SASL_PLAINTEXT
        with ``sasl_users``) and the controller's."""
        if not self.sasl_users:
            return [f"listeners=PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{controller}",
                    f"advertised.listeners=PLAINTEXT://127.0.0.1:{self.port}",
                    "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT"]
        for name, pw in self.sasl_users.items():
            if not all(c.isalnum() or c in "-_." for c in name + pw):
                raise ValueError(f"SASL user {name!r}: names and passwords of letters, digits, '-', '_', '.' only")
        plain = " ".join(f'user_{name}="{pw}"' for name, pw in self.sasl_users.items())
        scram = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
        return [
            f"listeners=PLAINTEXT://127.0.0.1:{internal},SASL_PLAINTEXT://127.0.0.1:{self.port},"
            f"CONTROLLER://127.0.0.1:{controller}",
            f"advertised.listeners=PLAINTEXT://127.0.0.1:{internal},SASL_PLAINTEXT://127.0.0.1:{self.port}",
            "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT",
            f"sasl.enabled.mechanisms=PLAIN,{','.join(SCRAM_MECHANISMS)}",
            "listener.name.sasl_plaintext.plain.sasl.jaas.config="
            f"org.apache.kafka.common.security.plain.PlainLoginModule required {plain};",
            *(f"listener.name.sasl_plaintext.{m.lower()}.sasl.jaas.config={scram}" for m in SCRAM_MECHANISMS),
        ]

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        log_path = self.workdir / "broker.log"
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"Kafka exited with {self._proc.returncode}:\n{log_path.read_text()[-4000:]}")
            if _answers("127.0.0.1", self.port) and b"Kafka Server started" in log_path.read_bytes():
                return
            time.sleep(0.2)
        self.stop()
        raise TimeoutError(f"Kafka did not start within {self.start_timeout}s:\n{log_path.read_text()[-4000:]}")

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            wait_or_kill(self._proc)
        self._proc = None
        if getattr(self, "_logfile", None):
            self._logfile.close()
        if self._owns_dir and self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> "LocalKafka":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def wait_or_kill(proc: subprocess.Popen, timeout: float = 30.0) -> None:
    """Wait for a process told to stop (SIGTERM) to exit; kill it after ``timeout`` seconds."""
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _cluster_id() -> str:
    """A KRaft cluster id: 16 random bytes, url-safe base64 without padding (22 chars). One that
    starts with "-" would be read as an option by the storage tool, so those are drawn again."""
    import base64

    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid


def serve_forever(port: int = 9092, data_dir: str | None = None) -> int:
    """Run a local broker in the foreground until interrupted (``stream-app broker``). With
    ``data_dir`` its data is kept there across restarts; without, a temporary folder is removed
    on stop."""
    import signal

    def _stop(signum, frame):  # SIGTERM stops the broker like Ctrl-C does
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _stop)
    with LocalKafka(port=port, workdir=Path(data_dir) if data_dir else None) as kafka:
        where = f"data in {kafka.workdir}" if data_dir else "temporary data, removed on stop"
        print(f"Kafka {kafka.version} on {kafka.bootstrap_servers} ({where}); Ctrl-C stops it", flush=True)
        try:
            while kafka._proc is not None and kafka._proc.poll() is None:
                time.sleep(1)
        except KeyboardInterrupt:
            pass
    return 0
