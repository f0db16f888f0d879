"""The project's monitoring without Docker: Debian's Prometheus and Pushgateway on 127.0.0.1.

Prometheus runs with ``monitoring/prometheus/prometheus.yml`` and its alert rules, the compose file's
service names replaced by local addresses: the API (``python -m lib serve``), the stream scorer
(``--metrics-port``) and the Pushgateway started beside it (07_drift_report pushes there with
``PUSHGATEWAY_URL``). ``python -m lib monitoring-local start|status|stop`` runs it for a user; the
monitoring test starts it with the same class. Grafana is not a Debian package: the dashboard is
imported into a Grafana of your own, or proven here through Prometheus (every panel's query).
"""

import json
import shutil
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from lib import atomic
from lib.config import PROJECT_ROOT, get_settings
from lib.errors import PipelineError
from lib.local import daemons

PROMETHEUS = PROJECT_ROOT / "monitoring" / "prometheus"


# the API's pods (k8s/deployment.yaml: its label and its port named http), with their namespace and pod name
KUBERNETES_PODS = [
    {"source_labels": ["__meta_kubernetes_pod_label_app_kubernetes_io_name", "__meta_kubernetes_pod_container_port_name"],
     "regex": "fraud-api;http", "action": "keep"},
    {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
    {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
]  # fmt: skip


class MonitoringError(PipelineError):
    """Prometheus or the Pushgateway cannot be found or started."""


def binary(name: str) -> str:
    found = shutil.which(name)
    if not found:
        raise MonitoringError(f"{name} is not installed: apt-get install prometheus prometheus-pushgateway")
    return found


@dataclass
class LocalMonitoring:
    """Prometheus (``prometheus_port``) scraping ``api`` and ``scorer`` (host:port) and its own Pushgateway."""

    data_dir: Path
    api: str = "127.0.0.1:8000"
    scorer: str = "127.0.0.1:9108"
    prometheus_port: int = 0
    pushgateway_port: int = 0
    scrape_interval: str = "5s"
    kubeconfig: str = ""  # the API's pods found on this cluster (kubernetes_sd_configs) instead of ``api``
    pids: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir)
        self.prometheus_port = self.prometheus_port or daemons.free_port()
        self.pushgateway_port = self.pushgateway_port or daemons.free_port()

    @property
    def prometheus_url(self) -> str:
        return f"http://127.0.0.1:{self.prometheus_port}"

    @property
    def pushgateway(self) -> str:
        return f"127.0.0.1:{self.pushgateway_port}"

    def config(self) -> dict:
        """The project's Prometheus config with the local targets (and its rules next to it)."""
        config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
        config["global"].update(scrape_interval=self.scrape_interval, evaluation_interval=self.scrape_interval)
        targets = {"fraud-api": self.api, "fraud-stream-scorer": self.scorer, "pushgateway": self.pushgateway}
        unknown = {job["job_name"] for job in config["scrape_configs"]} - set(targets)
        if unknown:
            raise MonitoringError(f"monitoring/prometheus/prometheus.yml scrapes jobs with no local target: {unknown}")
        for job in config["scrape_configs"]:
            job["static_configs"] = [{"targets": [targets[job["job_name"]]]}]
            if job["job_name"] == "fraud-api" and self.kubeconfig:
                del job["static_configs"]
                job.update(kubernetes_sd_configs=[{"role": "pod", "kubeconfig_file": self.kubeconfig}],
                           relabel_configs=KUBERNETES_PODS)  # fmt: skip
        return config

    def start(self, timeout: float = 60.0, detach: bool = False) -> "LocalMonitoring":
        self.data_dir.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(self.data_dir / "rules", ignore_errors=True)
        shutil.copytree(PROMETHEUS / "rules", self.data_dir / "rules")
        atomic.write_text(self.data_dir / "prometheus.yml", yaml.safe_dump(self.config(), sort_keys=False))
        self.pids = [
            daemons.spawn(
                [binary("prometheus-pushgateway"), f"--web.listen-address={self.pushgateway}"],
                self.data_dir / "pushgateway.log", detach=detach,
            ),
            daemons.spawn(
                [self._prometheus(), f"--config.file={self.data_dir / 'prometheus.yml'}",
                 f"--storage.tsdb.path={self.data_dir / 'tsdb'}", f"--web.listen-address=127.0.0.1:{self.prometheus_port}"],
                self.data_dir / "prometheus.log", detach=detach,
            ),
        ]  # fmt: skip
        deadline = time.monotonic() + timeout
        for url in (f"http://{self.pushgateway}/-/ready", f"{self.prometheus_url}/-/ready"):
            while not daemons.http_ok(url):
                if time.monotonic() > deadline or not self.running():
                    logs = "".join(p.read_text()[-1500:] for p in sorted(self.data_dir.glob("*.log")))
                    self.stop()
                    raise MonitoringError(f"{url} did not become ready within {timeout:.0f} s:\n{logs}")
                time.sleep(0.2)
        return self

    def _prometheus(self) -> str:
        """Debian's Prometheus; with ``kubeconfig``, the one built with Kubernetes discovery (Debian's lacks it)."""
        if not self.kubeconfig:
            return binary("prometheus")
        from lib.local import k8s_build

        return str(k8s_build.ensure_binaries() / "prometheus")

    def targets(self) -> dict[str, str]:
        """Each scrape job's health as Prometheus sees it (``up``, ``down`` or ``unknown``)."""
        with urllib.request.urlopen(f"{self.prometheus_url}/api/v1/targets", timeout=5) as response:
            active = json.loads(response.read())["data"]["activeTargets"]
        return {t["labels"]["job"]: t["health"] for t in active}

    def started(self) -> str:
        api = f"the API's pods found through {self.kubeconfig}" if self.kubeconfig else f"the API at {self.api}"
        return (
            f"Prometheus {self.prometheus_url} (rules of monitoring/prometheus/rules; alerts {self.prometheus_url}/alerts) "
            f"scraping {api} "
            f"and the stream scorer at {self.scorer}; "
            f"Pushgateway: PUSHGATEWAY_URL={self.pushgateway}"
        )

    def status(self) -> str:
        targets = ", ".join(f"{job} {health}" for job, health in sorted(self.targets().items()))
        return f"Prometheus {self.prometheus_url}, Pushgateway {self.pushgateway}: {targets}"

    def running(self) -> bool:
        return bool(self.pids) and all(daemons.alive(pid) for pid in self.pids)

    def stop(self) -> None:
        pids, self.pids = self.pids, []
        daemons.stop(pids, timeout=15)

    def __enter__(self) -> "LocalMonitoring":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


BACKGROUND = daemons.Background(
    "monitoring-local", "local monitoring", LocalMonitoring, lambda: get_settings().cache_dir / "monitoring"
)
