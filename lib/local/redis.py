"""A real Redis (Debian's ``redis-server``) on 127.0.0.1: the online feature store for one machine and the tests.

No persistence (the store is rebuilt from the stream and ``lib store backfill``), a memory cap with
``noeviction`` (a full store refuses writes, counted as store errors, instead of silently dropping an
account's history), and keys that expire by themselves (``lib.serving.online``). Set ``FRAUD_REDIS_URL``
(or ``REDIS_URL``) to use any other Redis instead (ElastiCache, a Redis beside Kubernetes); nothing here
runs then (``store_url``). ``python -m lib redis-local start|status|stop`` runs one for a user (``BACKGROUND``).
"""

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from lib import atomic
from lib.config import Settings, get_settings
from lib.errors import PipelineError
from lib.local import daemons


class RedisError(PipelineError):
    """The local Redis cannot be found, started or reached."""


def cache_dir() -> Path:
    return get_settings().cache_dir / "redis"


def _server() -> str:
    found = shutil.which("redis-server")
    if not found:
        raise RedisError("redis-server is not installed: apt-get install redis-server (or set FRAUD_REDIS_URL)")
    return found


def answers(url: str, timeout: float = 1.0) -> bool:
    """True when a Redis at ``url`` answers PING."""
    import redis

    try:
        with redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout) as client:
            return bool(client.ping())
    except (redis.RedisError, OSError):
        return False


@dataclass
class LocalRedis(daemons.OneProcess):
    """One ``redis-server`` on 127.0.0.1 with its files in ``data_dir``."""

    data_dir: Path
    port: int = 0
    max_memory: str = "4gb"
    pid: int | None = None
    stop_timeout = 10.0

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir)
        self.port = self.port or daemons.free_port()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "redis.log"

    def start(self, timeout: float = 30.0, detach: bool = False) -> "LocalRedis":
        """Start the server and wait until it answers; ``detach`` as for ``lib.local.kafka.LocalBroker``."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        config = self.data_dir / "redis.conf"
        atomic.write_text(
            config,
            "\n".join([
                "bind 127.0.0.1", f"port {self.port}", "protected-mode yes", f"dir {self.data_dir}",
                'save ""', "appendonly no", f"maxmemory {self.max_memory}", "maxmemory-policy noeviction",
                "daemonize no", "loglevel warning", "",
            ]),
        )  # fmt: skip
        self.pid = daemons.spawn([_server(), str(config)], self.log_file, detach=detach)
        return self.wait_answering(lambda: answers(self.url, 0.5), timeout, f"redis-server on {self.url}", RedisError)

    def started(self) -> str:
        return f"Redis running: FRAUD_REDIS_URL={self.url} (pid {self.pid}, data {self.data_dir})"

    def status(self) -> str:
        return f"Redis pid {self.pid} on {self.url}: {'answering' if answers(self.url) else 'NOT answering'}"


BACKGROUND = daemons.Background("redis-local", "local Redis", LocalRedis, cache_dir)


@contextmanager
def store_url(settings: Settings, data_dir: str | Path | None = None) -> Iterator[str]:
    """The online store's URL: ``FRAUD_REDIS_URL`` when set, else an embedded Redis for the block."""
    if settings.redis_url:
        yield settings.redis_url
        return
    with tempfile.TemporaryDirectory(prefix="redis-", dir=data_dir) as folder, LocalRedis(Path(folder)) as local:
        yield local.url
