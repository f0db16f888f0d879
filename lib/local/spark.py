"""A real Spark standalone cluster on 127.0.0.1 — a master and N workers — from the pyspark wheel itself.

The master and each worker are the JVM daemons of Spark's own ``bin/spark-class`` (the wheel carries
no ``sbin/start-*.sh``), each in its own process group, so ``stop`` ends exactly them and the
executors they launched. ``python -m lib spark-local start|status|stop`` runs one for a user (state
under the project's cache folder); tests start one with the same class.

Set ``SPARK_MASTER=spark://…`` to use it (or any other cluster) from the notebooks.
"""

import importlib.util
import json
import os
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from lib.config import get_settings
from lib.errors import PipelineError
from lib.local import daemons
from lib.local.daemons import free_port

DAEMON_MEMORY = "512m"  # the master and worker daemons themselves; executors get the worker's --memory


class SparkClusterError(PipelineError):
    """The local Spark cluster cannot be started or reached."""


def spark_home() -> Path:
    spec = importlib.util.find_spec("pyspark")
    if not spec or not spec.origin:
        raise SparkClusterError("pyspark is not installed; run make setup")
    return Path(spec.origin).parent


def spark_version() -> str:
    from importlib.metadata import version

    return version("pyspark")


@dataclass
class LocalCluster:
    """A standalone master and ``workers`` workers (``cores`` and ``memory`` each) with their files in ``data_dir``."""

    data_dir: Path
    workers: int = 2
    cores: int = 1
    memory: str = "2g"
    port: int = 0
    webui_port: int = 0
    pids: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir)
        self.port = self.port or free_port()
        self.webui_port = self.webui_port or free_port()

    @property
    def master_url(self) -> str:
        return f"spark://127.0.0.1:{self.port}"

    @property
    def webui(self) -> str:
        return f"http://127.0.0.1:{self.webui_port}"

    def _daemon(self, name: str, *args: str, detach: bool) -> int:
        env = {
            **os.environ,
            "SPARK_HOME": str(spark_home()),
            "SPARK_LOCAL_IP": "127.0.0.1",
            "SPARK_DAEMON_MEMORY": DAEMON_MEMORY,
            "PYSPARK_PYTHON": os.environ.get("PYSPARK_PYTHON", sys.executable),
        }
        command = [str(spark_home() / "bin" / "spark-class"), *args]
        return daemons.spawn(command, self.data_dir / f"{name}.log", env, detach)

    def start(self, timeout: float = 120.0, detach: bool = False) -> "LocalCluster":
        """Start the master, then the workers; return once every worker has registered with the master."""
        self.pids = [
            self._daemon(
                "master", "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1", "--port", str(self.port),
                "--webui-port", str(self.webui_port), detach=detach,
            )
        ]  # fmt: skip
        self._wait(lambda state: state.get("status") == "ALIVE", "the master", timeout)
        for i in range(self.workers):
            self.pids.append(
                self._daemon(
                    f"worker-{i}", "org.apache.spark.deploy.worker.Worker", self.master_url, "--host", "127.0.0.1",
                    "--cores", str(self.cores), "--memory", self.memory, "--webui-port", str(free_port()),
                    "--work-dir", str(self.data_dir / f"worker-{i}"), detach=detach,
                )
            )  # fmt: skip
        self._wait(lambda state: state.get("aliveworkers", 0) >= self.workers, f"{self.workers} workers", timeout)
        return self

    def state(self) -> dict:
        """The master's own JSON status (workers, cores, memory, applications)."""
        with urllib.request.urlopen(f"{self.webui}/json/", timeout=2) as response:
            return json.loads(response.read())

    def _wait(self, ready, what: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running():
                break
            try:
                if ready(self.state()):
                    return
            except OSError:
                pass
            time.sleep(0.5)
        logs = "".join(p.read_text(errors="replace")[-1500:] for p in sorted(self.data_dir.glob("*.log")))
        self.stop()
        raise SparkClusterError(f"{what} of the local Spark cluster did not come up within {timeout:.0f} s:\n{logs}")

    def started(self) -> str:
        return (
            f"Spark {spark_version()} standalone cluster running, {self.workers} workers x {self.cores} core(s), "
            f"{self.memory} each: SPARK_MASTER={self.master_url} (web UI {self.webui})"
        )

    def status(self) -> str:
        state = self.state()
        return (
            f"SPARK_MASTER={self.master_url} {state['status']}: {state['aliveworkers']} workers, "
            f"{state['coresused']}/{state['cores']} cores and {state['memoryused']}/{state['memory']} MB in use, "
            f"{len(state['activeapps'])} application(s); web UI {self.webui}"
        )

    def running(self) -> bool:
        return bool(self.pids) and all(daemons.alive(pid) for pid in self.pids)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the workers (they take their executors along), then the master."""
        pids, self.pids = self.pids, []
        daemons.stop(pids, timeout)

    def __enter__(self) -> "LocalCluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


BACKGROUND = daemons.Background(
    "spark-local", "local Spark cluster", LocalCluster, lambda: get_settings().cache_dir / "spark"
)
