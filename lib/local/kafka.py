"""A real single-node Apache Kafka broker (KRaft) on 127.0.0.1, for one machine and for the tests.

The official Apache Kafka jars are resolved from Maven Central with the Apache Ivy jar that ships in
pyspark's wheel (only Java is needed), cached under ``~/.cache/fraud-mlops/kafka/<version>``. The
broker's storage is formatted in a data folder of its own; stopping and starting it again on the
same folder and port keeps every topic and committed offset (the fault tests rely on that).

Set ``KAFKA_BOOTSTRAP_SERVERS`` to use any other cluster instead; nothing here runs then
(``broker``). ``python -m lib kafka-local start|status|stop`` runs one for a user (``BACKGROUND``).
"""

import importlib.util
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from lib import atomic
from lib.config import Settings, get_settings
from lib.errors import PipelineError
from lib.local import daemons

KAFKA_VERSION = "4.1.1"
SCALA_VERSION = "2.13"
LOG4J_VERSION = "2.24.3"  # the log4j2 line Kafka 4.1 is built against; the slf4j binding makes its logs visible
HEAP = "-Xmx768m"

_IVY_XML = f"""<ivy-module version="2.0">
  <info organisation="local" module="fraud-mlops-kafka"/>
  <dependencies>
    <dependency org="org.apache.kafka" name="kafka_{SCALA_VERSION}" rev="{KAFKA_VERSION}" conf="default"/>
    <dependency org="org.apache.logging.log4j" name="log4j-slf4j-impl" rev="{LOG4J_VERSION}" conf="default"/>
  </dependencies>
</ivy-module>
"""

_LOG4J2 = """status = warn
appender.out.type = Console
appender.out.name = out
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.out.ref = out
logger.server.name = kafka.server.KafkaRaftServer
logger.server.level = INFO
"""


class KafkaError(PipelineError):
    """The local broker cannot be fetched, started or reached."""


def cache_dir() -> Path:
    """Jars, state and the user's broker data, under the project's one cache root."""
    return get_settings().cache_dir / "kafka" / KAFKA_VERSION


def _ivy_jar() -> Path:
    """Apache Ivy from pyspark's wheel, found without importing pyspark (the stream stays free of Spark)."""
    spec = importlib.util.find_spec("pyspark")
    found = sorted(Path(spec.origin).parent.joinpath("jars").glob("ivy-*.jar")) if spec and spec.origin else []
    if not found:
        raise KafkaError(
            "pyspark's wheel has no ivy-*.jar to resolve Kafka with; reinstall pyspark (requirements.lock)"
        )
    return found[-1]


def ensure_jars() -> Path:
    """The Kafka broker's jars (resolved from Maven Central once, then cached); returns their folder."""
    jars = cache_dir() / "jars"
    if (jars / f"kafka_{SCALA_VERSION}-{KAFKA_VERSION}.jar").exists():
        return jars
    java = _java()
    with atomic.staged_dir(jars) as staging:  # a half-resolved folder is never used
        staging.mkdir()
        (staging / "ivy.xml").write_text(_IVY_XML)
        command = [
            java, "-jar", str(_ivy_jar()), "-ivy", str(staging / "ivy.xml"), "-confs", "default",
            "-cache", str(jars.parent / "ivy-cache"), "-retrieve", str(staging / "[artifact]-[revision](-[classifier]).[ext]"),
        ]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, timeout=900)
        if done.returncode != 0 or not any(staging.glob("*.jar")):
            raise KafkaError(
                f"could not resolve Apache Kafka {KAFKA_VERSION} from Maven Central with Ivy "
                f"(exit {done.returncode}); check the network or proxy, then retry:\n{done.stdout[-2000:]}{done.stderr[-2000:]}"
            )
    return jars


def _java() -> str:
    home = os.environ.get("JAVA_HOME")
    java = str(Path(home) / "bin" / "java") if home else shutil.which("java")
    if not java or not Path(java).exists():
        raise KafkaError("Java 17+ is needed to run the Kafka broker; install a JDK or set JAVA_HOME")
    return java


def answers(bootstrap: str, timeout: float = 2.0) -> bool:
    """True when a Kafka broker at ``bootstrap`` answers a metadata request."""
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaConnectionError, RetriableError

    unreachable = (RetriableError, KafkaConnectionError, OSError)
    ms = int(timeout * 1000)
    try:
        admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=ms, bootstrap_timeout_ms=ms)
    except unreachable:
        return False
    try:
        admin.describe_cluster()
        return True
    except unreachable:
        return False
    finally:
        admin.close()


@dataclass
class LocalBroker(daemons.OneProcess):
    """One Kafka process (broker + KRaft controller) on 127.0.0.1 with its data in ``data_dir``."""

    data_dir: Path
    port: int = 0
    controller_port: int = 0
    partitions: int = 4
    pid: int | None = None

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir)
        self.port = self.port or daemons.free_port()
        self.controller_port = self.controller_port or daemons.free_port()

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "broker.log"

    def _configure(self) -> Path:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        props = self.data_dir / "server.properties"
        atomic.write_text(
            props,
            "\n".join(
                [
                    "process.roles=broker,controller",
                    "node.id=1",
                    f"controller.quorum.voters=1@127.0.0.1:{self.controller_port}",
                    f"listeners=PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
                    f"advertised.listeners=PLAINTEXT://127.0.0.1:{self.port}",
                    "controller.listener.names=CONTROLLER",
                    "inter.broker.listener.name=PLAINTEXT",
                    "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
                    f"log.dirs={self.data_dir / 'logs'}",
                    f"num.partitions={self.partitions}",
                    "offsets.topic.replication.factor=1",
                    "offsets.topic.num.partitions=4",
                    "transaction.state.log.replication.factor=1",
                    "transaction.state.log.min.isr=1",
                    "share.coordinator.state.topic.replication.factor=1",
                    "share.coordinator.state.topic.min.isr=1",
                    "group.initial.rebalance.delay.ms=0",
                    "auto.create.topics.enable=true",
                    "log.retention.hours=24",
                    "",
                ]
            ),
        )
        atomic.write_text(self.data_dir / "log4j2.properties", _LOG4J2)
        return props

    def _classpath(self) -> list[str]:
        return [
            _java(),
            HEAP,
            f"-Dlog4j2.configurationFile={self.data_dir / 'log4j2.properties'}",
            "-cp",
            str(ensure_jars() / "*"),
        ]

    def start(self, timeout: float = 90.0, detach: bool = False) -> "LocalBroker":
        """Format the storage (first start only), start the broker and wait until it answers.

        ``detach=True`` leaves it running after this process exits (``kafka-local start``); otherwise
        the broker is stopped with this process even if it dies without cleaning up (Linux).
        """
        props = self._configure()
        if not (self.data_dir / "logs" / "meta.properties").exists():
            cluster_id = _cluster_id()
            done = subprocess.run(
                [*self._classpath(), "kafka.tools.StorageTool", "format", f"--cluster-id={cluster_id}", "-c", str(props)],
                capture_output=True, text=True, timeout=120,
            )  # fmt: skip
            if done.returncode != 0:
                raise KafkaError(f"formatting Kafka storage in {self.data_dir} failed:\n{done.stdout}{done.stderr}")
        self.pid = daemons.spawn([*self._classpath(), "kafka.Kafka", str(props)], self.log_file, detach=detach)
        return self.wait_answering(
            lambda: answers(self.bootstrap, 1.0), timeout, f"the Kafka broker on {self.bootstrap}", KafkaError
        )

    def started(self) -> str:
        return f"Kafka {KAFKA_VERSION} running: KAFKA_BOOTSTRAP_SERVERS={self.bootstrap} (pid {self.pid}, data {self.data_dir})"

    def status(self) -> str:
        state = "answering" if answers(self.bootstrap) else "NOT answering"
        return f"Kafka {KAFKA_VERSION} pid {self.pid} on {self.bootstrap}: {state}"


def _cluster_id() -> str:
    import base64

    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


BACKGROUND = daemons.Background("kafka-local", "local Kafka broker", LocalBroker, cache_dir)


@contextmanager
def broker(settings: Settings, data_dir: str | Path | None = None) -> Iterator[str]:
    """Bootstrap servers: ``KAFKA_BOOTSTRAP_SERVERS`` when set, else an embedded broker for the block."""
    if settings.kafka_bootstrap_servers:
        yield settings.kafka_bootstrap_servers
        return
    with tempfile.TemporaryDirectory(prefix="kafka-", dir=data_dir) as folder, LocalBroker(Path(folder)) as local:
        yield local.bootstrap
