"""Spark sessions for every Spark step (01 on Spark, 02, 04 on Spark): one place for the master and its settings.

``SPARK_MASTER`` is ``local[*]`` (this machine's cores), ``spark://host:7077`` (a standalone cluster,
e.g. ``python -m lib spark-local start``), ``k8s://https://…`` or ``yarn``. A ``spark://`` master is
checked before Spark tries it, so a wrong address fails at once with its name instead of hanging.
On a non-local master the session ships this checkout's ``lib`` to the executors, so they run the
same code as the driver.
"""

import os
import re
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path

from lib.logs import stderr_to
from lib.config import get_settings
from lib.errors import ParameterError
from lib.schema import RAW_SCHEMA

_LOG4J = Path(__file__).with_name("spark-log4j2.properties").as_uri()
_LOCAL = re.compile(r"^local(\[(\*|\d+)(,\d+)?\])?$")


def is_local(master: str) -> bool:
    return bool(_LOCAL.match(master))


def check_master(master: str, timeout: float = 3.0) -> None:
    """Refuse a malformed master URL, and a ``spark://`` master that does not accept connections."""
    if is_local(master) or master.startswith(("k8s://", "yarn")):
        return
    if not master.startswith("spark://"):
        raise ParameterError(
            f"SPARK_MASTER={master!r} is not a Spark master URL; use local[*], spark://HOST:PORT "
            "(python -m lib spark-local start prints one), k8s://https://HOST:PORT or yarn"
        )
    for address in master.removeprefix("spark://").split(","):  # standalone HA lists several masters
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit():
            raise ParameterError(f"SPARK_MASTER={master!r}: {address!r} is not HOST:PORT")
        try:
            socket.create_connection((host, int(port)), timeout=timeout).close()
            return
        except OSError:
            continue
    raise ParameterError(
        f"SPARK_MASTER={master!r}: no Spark master accepts connections there; start one "
        "(python -m lib spark-local start) or check the host and port"
    )


def spark_session(
    master: str = "local[*]", driver_memory: str = "4g", app_name: str = "fraud-pipeline", executor_memory: str = ""
):
    """A SparkSession for ``master``, with the Parquet settings that make equal data give equal bytes."""
    from pyspark.sql import SparkSession

    check_master(master)
    running = SparkSession.getActiveSession()
    if running is not None and running.sparkContext.master != master:
        raise ParameterError(
            f"a Spark session on {running.sparkContext.master} is already running in this process; stop it "
            f"(spark.stop()) before starting one on SPARK_MASTER={master!r}"
        )
    # executors run Python (the simulator, XGBoost): the driver's interpreter unless PYSPARK_PYTHON names another
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = (
        SparkSession.builder.master(master)
        .appName(app_name)
        .config("spark.driver.memory", driver_memory)
        .config("spark.driver.extraJavaOptions", f"-Dlog4j.configurationFile={_LOG4J}")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "8")
        # LZ4 and no dictionary pages: the full data set writes faster than with the defaults (docs/benchmarks.md)
        .config("spark.sql.parquet.compression.codec", "lz4_raw")
        .config("spark.hadoop.parquet.enable.dictionary", "false")
        # v2 pages list one encoding per column chunk; v1 pages list a HashSet of enums, whose order
        # changes between JVMs (apache/parquet-java#3215), so the same data hashed differently per run
        .config("spark.hadoop.parquet.writer.version", "v2")
        # size checks every 1,000-100,000 rows (not from every 100) and no 20,000-row cap on pages;
        # pages still close at parquet.page.size (1 MB)
        .config("spark.hadoop.parquet.page.size.row.check.min", "1000")
        .config("spark.hadoop.parquet.page.size.row.check.max", "100000")
        .config("spark.hadoop.parquet.page.row.count.limit", "1000000")
        # one open writer per split instead of sorting every task's rows by split before writing
        .config("spark.sql.maxConcurrentOutputFileWriters", "4")
        .config("spark.ui.showConsoleProgress", "false")
    )
    if executor_memory:
        builder = builder.config("spark.executor.memory", executor_memory)
    # the driver JVM's start-up lines ("Using incubator modules", the log-level banner) go to a log file
    with stderr_to(get_settings().cache_dir / "spark" / f"driver-{os.getpid()}.log"):
        session = builder.getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    if not is_local(master):
        session.sparkContext.addPyFile(str(_zipped_lib()))
    return session


def _zipped_lib() -> Path:
    """This checkout's ``lib`` as a zip for the executors' Python path."""
    folder = Path(tempfile.mkdtemp(prefix="fraud-lib-"))
    archive = shutil.make_archive(str(folder / "lib"), "zip", Path(__file__).resolve().parents[2], "lib")
    return Path(archive)


def spark_schema():
    """The raw contract (``lib.schema``) as a Spark schema."""
    from pyspark.sql import types as T

    mapping = {"int32": T.IntegerType(), "int8": T.ByteType(), "double": T.DoubleType(), "string": T.StringType()}
    return T.StructType([T.StructField(f.name, mapping[str(f.type)], True) for f in RAW_SCHEMA])


def executors(spark, settle: float = 2.0, timeout: float = 60.0) -> int:
    """How many executors the session has (1 on a local master), once their number stopped growing for
    ``settle`` seconds: XGBoost's ``num_workers`` on Spark. Executors register a little after the session."""
    if is_local(spark.sparkContext.master):
        return 1
    tracker = spark.sparkContext._jsc.sc().statusTracker()
    deadline, count, since = time.monotonic() + timeout, 0, time.monotonic()
    while time.monotonic() < deadline:
        now = len(tracker.getExecutorInfos()) - 1  # the driver is listed too
        if now != count:
            count, since = now, time.monotonic()
        elif count > 0 and time.monotonic() - since >= settle:
            break
        time.sleep(0.2)
    if count < 1:
        raise ParameterError(f"no executor joined the Spark application on {spark.sparkContext.master} in {timeout:.0f} s")
    return count


_PART_NAME = re.compile(r"^(part-\d+)-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}(?:[.-](c\d+))?(\..*)?$")


def stable_file_names(folder: Path) -> None:
    """Drop the random job id Spark puts in file names (and its checksums), so equal data hashes equally."""
    for path in list(folder.rglob("*")):
        if (path.name.startswith(".") and path.name.endswith(".crc")) or path.name == "_SUCCESS":
            path.unlink()
        elif match := _PART_NAME.match(path.name):
            part, file_count, suffix = match.groups()
            path.rename(path.with_name(f"{part}{f'.{file_count}' if file_count else ''}{suffix or ''}"))
