"""``python -m lib kafka-local|redis-local|spark-local|monitoring-local start|status|stop``, as a user runs them: one
mechanism (``lib.local.daemons.Background``), each service in a cache folder of the test's own."""

import os
import subprocess
import sys
import urllib.request

import pytest
import redis

from lib.config import PROJECT_ROOT
from lib.data.spark import check_master
from lib.errors import ParameterError
from lib.local import kafka as kafka_local
from lib.local import redis as redis_local
from lib.local.daemons import free_port
from tests.monitoring.test_monitoring import need

pytestmark = pytest.mark.slow


def command(name: str, env: dict, timeout: float = 180):
    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "lib", name, *args], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True,
            timeout=timeout,
        )  # fmt: skip

    return cli


def test_kafka_local_start_status_stop(tmp_path):
    cache = tmp_path / "cache"
    version_dir = cache / "fraud-mlops" / "kafka" / kafka_local.KAFKA_VERSION
    version_dir.mkdir(parents=True)
    (version_dir / "jars").symlink_to(kafka_local.ensure_jars())  # no second download
    cli = command("kafka-local", {**os.environ, "XDG_CACHE_HOME": str(cache)})
    assert cli("status").returncode == 3
    started = cli("start", "--data-dir", str(tmp_path / "data"))
    assert started.returncode == 0, started.stderr
    bootstrap = started.stdout.split("KAFKA_BOOTSTRAP_SERVERS=")[1].split()[0]
    try:
        assert kafka_local.answers(bootstrap)
        assert cli("start").stdout == started.stdout  # the running one, not a second broker
        status = cli("status")
        assert "answering" in status.stdout and bootstrap in status.stdout
    finally:
        assert cli("stop").stdout.strip() == "stopped"
    assert not kafka_local.answers(bootstrap, timeout=1)
    assert cli("stop").stdout.strip() == "no local Kafka broker was running"


def test_redis_local_start_status_stop(tmp_path):
    cli = command("redis-local", {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")})
    assert cli("status").returncode == 3
    started = cli("start", "--max-memory", "64mb")
    assert started.returncode == 0, started.stderr
    url = started.stdout.split("FRAUD_REDIS_URL=")[1].split()[0]
    assert str(tmp_path / "cache" / "fraud-mlops" / "redis" / "local-data") in started.stdout
    try:
        assert redis_local.answers(url)
        with redis.Redis.from_url(url) as client:
            assert client.config_get("maxmemory") == {"maxmemory": str(64 * 2**20)}
            assert client.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
        assert cli("start").stdout == started.stdout  # the running one, not a second server
        status = cli("status")
        assert "answering" in status.stdout and url in status.stdout
    finally:
        assert cli("stop").stdout.strip() == "stopped"
    assert not redis_local.answers(url)
    assert cli("stop").stdout.strip() == "no local Redis was running"


def test_spark_local_start_status_stop(tmp_path):
    env = {"PATH": f"{PROJECT_ROOT / '.venv' / 'bin'}:/usr/bin:/bin", "XDG_CACHE_HOME": str(tmp_path),
           "HOME": str(tmp_path)}  # fmt: skip
    cli = command("spark-local", env)
    assert cli("status").returncode == 3
    started = cli("start", "--workers", "2", "--memory", "1g")
    assert started.returncode == 0 and "SPARK_MASTER=spark://127.0.0.1:" in started.stdout, started.stderr
    try:
        status = cli("status")
        assert status.returncode == 0 and "ALIVE: 2 workers" in status.stdout
        master = started.stdout.split("SPARK_MASTER=")[1].split()[0]
        check_master(master)  # accepts connections
    finally:
        stopped = cli("stop")
    assert stopped.stdout.strip() == "stopped" and cli("status").returncode == 3
    with pytest.raises(ParameterError, match="no Spark master accepts connections"):
        check_master(master)


def test_monitoring_local_start_status_stop(tmp_path):
    need("prometheus"), need("prometheus-pushgateway")
    cli = command("monitoring-local", {**os.environ, "XDG_CACHE_HOME": str(tmp_path)}, timeout=120)
    ports = [str(free_port()), str(free_port())]
    assert cli("status").returncode == 3
    started = cli("start", "--port", ports[0], "--pushgateway-port", ports[1], "--api", "127.0.0.1:1")
    try:
        assert started.returncode == 0 and f"PUSHGATEWAY_URL=127.0.0.1:{ports[1]}" in started.stdout, started.stderr
        status = cli("status")
        assert status.returncode == 0 and f"Prometheus http://127.0.0.1:{ports[0]}" in status.stdout
        assert urllib.request.urlopen(f"http://127.0.0.1:{ports[0]}/api/v1/rules", timeout=5).status == 200
    finally:
        stopped = cli("stop")
    assert stopped.stdout.strip() == "stopped" and cli("status").returncode == 3
