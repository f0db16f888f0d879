"""Benchmark: the Lambda package's size, cold start and warm latency, run as Lambda runs it.

Builds ``chalice package --stage dev`` under the Lambda Python (Debian trixie's 3.13, see
``lib/local/lambda_package.py``), unpacks it and runs it with the AWS Lambda Runtime Interface
Emulator and ``awslambdaric`` on 127.0.0.1. Prints:

* size: the zip, unzipped, and the largest top-level parts (target unzipped < 80 MB; Lambda's limit 250 MB);
* cold start: emulator start -> first ``/v1/predict`` answer, and the init duration the emulator reports
  in its ``INIT REPORT`` line (target < 1.5 s);
* warm: p50 / p99 of 1,000 ``/v1/predict`` invocations, one at a time (target p99 < 20 ms);
* ``--store``: the same warm invocations reading the online feature store (``FRAUD_REDIS_URL``, a local
  Redis on loopback: each request's entity features, one round trip) against the same package without it,
  alternately twice each (issue 34's budget: p99 within 2 ms of it).

Needs root (debootstrap, chroot) and Go. ``--bundle`` defaults to ``data/bundle`` (``make run`` exports it).

    .venv/bin/python benchmarks/lambda_package.py [--bundle data/bundle] [--invokes 1000]
"""

import argparse
import json
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lib.local import lambda_package  # noqa: E402

TRANSACTION = {"step": 1, "type": "TRANSFER", "amount": 181.0, "nameOrig": "C1305486145", "oldbalanceOrg": 181.0,
               "newbalanceOrig": 0.0, "nameDest": "C553264065", "oldbalanceDest": 0.0, "newbalanceDest": 0.0}  # fmt: skip
KEY = "benchmark-key"


def mb(value: int) -> str:
    return f"{value / 1e6:.1f} MB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", default=str(ROOT / "data" / "bundle"))
    parser.add_argument("--invokes", type=int, default=1000)
    parser.add_argument("--store", action="store_true", help="also measure warm invokes reading the online store")
    args = parser.parse_args()
    bundle = Path(args.bundle)
    if not (bundle / "bundle.json").exists():
        raise SystemExit(f"{bundle}: no serving bundle; run `make run` first or pass --bundle")
    work = Path(tempfile.mkdtemp(prefix="lambda-bench-"))
    began = time.perf_counter()
    root = lambda_package.lambda_root()
    print(f"Lambda Python: {lambda_package.python_version(root)} (root ready in {time.perf_counter() - began:.0f} s)")
    began = time.perf_counter()
    folder = lambda_package.package("dev", bundle, work / "dev")
    print(f"chalice package --stage dev: {time.perf_counter() - began:.0f} s")
    unpacked = lambda_package.unpack(folder / "deployment.zip", work / "task")
    report = lambda_package.check_package(folder / "deployment.zip", unpacked)
    target = "met" if report.unzipped_bytes < lambda_package.UNZIPPED_TARGET else (
        f"MISSED by {mb(report.unzipped_bytes - lambda_package.UNZIPPED_TARGET)}"
    )  # fmt: skip
    print(f"\nsize: zip {mb(report.zipped_bytes)}, unzipped {mb(report.unzipped_bytes)} (target < 80 MB: {target}; "
          f"Lambda's limit 262 MB: {'met' if report.ok else 'MISSED'}); {report.elf_files} ELF files, "
          f"glibc/arch problems: {report.elf_problems or 'none'}")  # fmt: skip
    for name, size in list(report.by_top_level.items())[:12]:
        print(f"  {name:<32} {mb(size):>10}")

    env = {"FRAUD_SERVING_MODEL": "bundle", "FRAUD_API_KEYS": KEY}
    event = lambda_package.api_event("POST", "/v1/predict", json.dumps(TRANSACTION), {"X-API-Key": KEY})
    started = time.perf_counter()
    with lambda_package.LambdaEmulator(unpacked, env) as emulator:
        first = emulator.invoke(event)
        cold = time.perf_counter() - started
        assert first["statusCode"] == 200, first
        # the emulator runs init on demand, inside the first invoke: its INIT REPORT line has the init's
        # duration (the REPORT line's "Init Duration" is then only its own bookkeeping)
        init = re.findall(r"INIT REPORT\(durationMs: ([\d.]+)\)", emulator.output())
        latencies = []
        for _ in range(args.invokes):
            began = time.perf_counter()
            answer = emulator.invoke(event)
            latencies.append(time.perf_counter() - began)
            assert answer["statusCode"] == 200
    init_s = float(init[0]) / 1000 if init else float("nan")
    if args.store:
        store_budget(unpacked, env, event, args.invokes)
    p50, p99 = (float(np.percentile(latencies, q)) * 1000 for q in (50, 99))
    print(
        f"\ncold start: emulator start -> first /v1/predict answer {cold:.2f} s; init (the emulator's INIT REPORT) "
        f"{init_s:.2f} s (target < 1.5 s: {'met' if init_s < 1.5 else f'MISSED by {init_s - 1.5:.2f} s'})"
    )
    print(f"warm: {args.invokes:,} /v1/predict invokes, p50 {p50:.2f} ms, p99 {p99:.2f} ms "
          f"(target p99 < 20 ms: {'met' if p99 < 20 else 'MISSED'})")  # fmt: skip


def warm(unpacked: Path, env: dict, event: dict, invokes: int) -> tuple[float, float]:
    with lambda_package.LambdaEmulator(unpacked, env) as emulator:
        assert emulator.invoke(event)["statusCode"] == 200
        latencies = []
        for _ in range(invokes):
            began = time.perf_counter()
            answer = emulator.invoke(event)
            latencies.append(time.perf_counter() - began)
            assert answer["statusCode"] == 200, answer
    p50, p99 = (float(np.percentile(latencies, q)) * 1000 for q in (50, 99))
    return p50, p99


def store_budget(unpacked: Path, env: dict, event: dict, invokes: int) -> None:
    from lib.local.redis import LocalRedis

    with tempfile.TemporaryDirectory() as folder, LocalRedis(Path(folder)) as redis:
        runs: dict[str, list[tuple[float, float]]] = {"without": [], "with": []}
        for _ in range(2):
            runs["without"].append(warm(unpacked, env, event, invokes))
            runs["with"].append(warm(unpacked, {**env, "FRAUD_REDIS_URL": redis.url}, event, invokes))
    without, with_store = (max(p99 for _, p99 in runs[k]) for k in ("without", "with"))
    print(f"\nwarm p50 / p99 without the store: {runs['without']}; reading it: {runs['with']} (ms)")
    print(f"store: worst p99 {with_store:.2f} ms against {without:.2f} ms without (+{with_store - without:.2f} ms; "
          f"budget within 2 ms: {'met' if with_store - without <= 2 else 'MISSED'})")  # fmt: skip


if __name__ == "__main__":
    main()
