"""Benchmark: the online feature store (issue 34) against its budgets, each beside today's figure in the same run.

On a local Redis (``lib.local.redis``) backfilled with ``--rows`` simulated transactions (steps 1 to the
window's start) and the embedded Kafka broker:

1. **Read** (redis-py + hiredis, the direct client the store uses): one transaction's entity vector (its
   destination's and origin's hashes, one pipelined round trip, then the rule applied) for ``--reads``
   transactions of the window one at a time: p50 / p99 (budget p99 <= 1 ms); and 2,000-row batches.
2. **API**: ``python -m lib serve`` (one worker) without the store, with it (reads), and recording too
   (``FRAUD_STORE_RECORD``): single transactions as fast as answered (budget >= 3,000 requests/s) and paced at
   1,000/s (budget p99 <= 2 ms), by wrk, as ``serve_http.py``. Each request names a transaction of the window.
3. **Stream**: the scorer draining ``--stream-rows`` transactions of the window without the store and with it
   (ticks, the watermark, reads and records; budget >= 80,000/s), and the window paced at 2,000/s offered with
   and without it: the end-to-end p99 (what the watermark and the store add).
4. **Memory**: the store after backfilling ``--memory-rows`` transactions (``--memory-rows 6362620``: PaySim's
   month), per account and in total.

    .venv/bin/python benchmarks/online_store.py [--bundle data/bundle] [--rows 400000] [--memory-rows 0]
"""

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from serve_http import KEY, on_server, start, stop  # noqa: E402
from stream_throughput import BATCH_TIMEOUT_MS, wait_committed  # noqa: E402

from lib.config import get_settings  # noqa: E402
from lib.data.simulate import simulate_table  # noqa: E402
from lib.local import kafka as kafka_local  # noqa: E402
from lib.local.daemons import free_port  # noqa: E402
from lib.local.redis import LocalRedis  # noqa: E402
from lib.monitoring.stream_report import results_frame, summarize  # noqa: E402
from lib.serving.online import OnlineStore  # noqa: E402
from lib.stream import kafka as stream  # noqa: E402
from lib.stream import process as scorer_process  # noqa: E402

READ_P99_MS, API_RPS, API_P99_MS, STREAM_PER_S = 1.0, 3_000, 2.0, 80_000
DELAY = 2
NAMES = ("step", "amount", "nameOrig", "nameDest", "transaction_id", "isFraud")


def met(ok: bool) -> str:
    return "met" if ok else "MISSED"


def month(rows: int, seed: int = 42) -> pa.Table:
    table = simulate_table(rows, seed=seed)
    table = table.take(pc.sort_indices(table, [("step", "ascending")]))
    return table.append_column("transaction_id", pa.array([f"o{seed}-{i:09d}" for i in range(table.num_rows)]))


def split(table: pa.Table, rows: int) -> tuple[pa.Table, pa.Table]:
    """History (backfilled) and the window (the last ``rows`` transactions, from a step's first)."""
    steps = table.column("step").to_numpy()
    first = int(steps[max(len(steps) - rows, 0)])
    return table.filter(pa.array(steps < first)), table.filter(pa.array(steps >= first))


def columns(table: pa.Table) -> dict:
    return {c: table.column(c).to_pylist() for c in NAMES}


def reads(store: OnlineStore, window: pa.Table, n: int) -> dict:
    rows = window.slice(0, n).to_pylist()
    latencies = []
    for row in rows:
        began = time.perf_counter()
        store.read({c: [row[c]] for c in ("step", "nameOrig", "nameDest")})
        latencies.append(time.perf_counter() - began)
    batch = {c: window.column(c).to_pylist()[:2000] for c in ("step", "nameOrig", "nameDest")}
    began, rounds = time.perf_counter(), 0
    while time.perf_counter() - began < 3:
        store.read(batch)
        rounds += 1
    p50, p99 = (float(np.percentile(latencies, q)) * 1000 for q in (50, 99))
    return {"p50_ms": p50, "p99_ms": p99, "batch_rows_per_s": rounds * 2000 / (time.perf_counter() - began)}


def api(bundle: str, url: str | None, prefix: str, record: bool, body: str, seconds: int) -> dict:
    port = free_port()
    env = {"FRAUD_SERVING_MODEL": bundle, "FRAUD_API_KEYS": KEY, "FRAUD_SERVING_WORKERS": "1"}
    if url:
        env |= {"FRAUD_REDIS_URL": url, "FRAUD_STORE_PREFIX": prefix, "FRAUD_STORE_RECORD": str(record).lower()}
    proc = start([sys.executable, "-m", "lib", "serve", "--port", str(port)], port, "/readyz", env)
    try:
        target = f"http://127.0.0.1:{port}/v1/predict"
        on_server(proc, target, body, 2, 2)  # warm-up
        fast = on_server(proc, target, body, seconds, 8)
        paced = on_server(proc, target, body, seconds, 12, rate=1000)
    finally:
        stop(proc)
    return {"rps": fast["rps"], "paced_p99_ms": paced["p99_ms"], "errors": fast["errors"] + paced["errors"]}


def stream_runs(bootstrap: str, bundle: str, url: str, prefix: str, history: pa.Table, window: pa.Table, rows: int,
                seconds: float) -> dict:  # fmt: skip
    out = {}
    drained = window.slice(0, rows)
    paced = window.slice(0, int(2000 * seconds))
    for name, store in (("without", False), ("with", True)):
        for kind, table, rate in (("drain", drained, 0.0), ("paced", paced, 2000.0)):
            topics = stream.Topics(f"bench-os-{name}-{kind}-{time.time_ns()}.")
            stream.ensure_topics(bootstrap, topics, partitions=4)
            extra = ["--batch-size", "2000", "--batch-timeout-ms", str(BATCH_TIMEOUT_MS), "--no-shadow"]
            if store:
                run_prefix = f"{prefix}{kind}:"
                OnlineStore(url, DELAY, prefix=run_prefix).backfill(columns(history))
                extra += ["--store", url, "--store-prefix", run_prefix, "--log-features", "0.01"]
            steps = table.column("step").to_numpy() if store else None
            messages = stream.encode_transactions(table)
            if kind == "drain":
                stream.replay(bootstrap, topics.transactions, messages, 0.0, steps=steps, labels_topic=topics.labels)
            proc = scorer_process.start_scorer_process(bootstrap, topics, bundle, *extra)
            try:
                if kind == "paced":
                    time.sleep(4)
                    stream.replay(
                        bootstrap, topics.transactions, messages, rate, steps=steps, labels_topic=topics.labels
                    )
                wait_committed(bootstrap, topics.transactions, timeout=900)
            finally:
                scorer_process.stop_scorer_process(proc)
            results = results_frame(stream.read_topic(bootstrap, topics.scores, expect=table.num_rows, timeout=600))
            if results.transaction_id.nunique() != table.num_rows:
                raise SystemExit(f"{name}/{kind}: {results.transaction_id.nunique()} of {table.num_rows} scored")
            if kind == "drain":
                span = (results.appended_ms.max() - results.appended_ms.min()) / 1000
                out[name, kind] = table.num_rows / span
            else:
                out[name, kind] = summarize(results).latency_p99_ms
    return out


def memory(url: str, rows: int) -> None:
    table = month(rows, seed=7)
    store = OnlineStore(url, DELAY, prefix="mem:")
    store.client.flushdb()
    began = time.perf_counter()
    store.backfill(columns(table))
    seconds = time.perf_counter() - began
    stats = store.stats()
    accounts = stats["destinations"] + stats["origins"]
    print(f"\nmemory after backfilling {table.num_rows:,} transactions ({seconds:.0f} s, {table.num_rows / seconds:,.0f}/s):"
          f" {stats['used_memory_bytes'] / 2**20:,.1f} MiB used by Redis; {stats['destinations']:,} destinations, "
          f"{stats['origins']:,} origins (alive: the last 26 steps), {stats['index_steps']:,} steps of transaction "
          f"index; {stats['used_memory_bytes'] / max(accounts, 1):,.0f} bytes per account kept")  # fmt: skip
    print(json.dumps(stats))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", default=str(ROOT / "data" / "bundle"))
    parser.add_argument("--rows", type=int, default=400_000, help="simulated transactions (history + window)")
    parser.add_argument("--window", type=int, default=150_000, help="transactions after the backfilled history")
    parser.add_argument("--reads", type=int, default=20_000)
    parser.add_argument("--stream-rows", type=int, default=100_000)
    parser.add_argument("--seconds", type=int, default=10, help="per wrk run, and of the paced stream")
    parser.add_argument("--memory-rows", type=int, default=0, help="also measure memory after this many (6362620)")
    args = parser.parse_args()
    if not (Path(args.bundle) / "bundle.json").exists():
        raise SystemExit(f"{args.bundle}: no serving bundle; run `make run` first or pass --bundle")
    history, window = split(month(args.rows), args.window)
    print(
        f"history {history.num_rows:,} transactions (steps 1..{history.column('step')[-1]}), window {window.num_rows:,}"
    )
    with tempfile.TemporaryDirectory() as folder, LocalRedis(Path(folder) / "redis", max_memory="8gb") as redis:
        store = OnlineStore(redis.url, DELAY, prefix="bench:")
        began = time.perf_counter()
        store.backfill(columns(history))
        print(f"backfill: {history.num_rows / (time.perf_counter() - began):,.0f} transactions/s")

        read = reads(store, window, args.reads)
        print(f"\n1. read one vector: p50 {read['p50_ms']:.3f} ms, p99 {read['p99_ms']:.3f} ms "
              f"(budget p99 <= {READ_P99_MS} ms: {met(read['p99_ms'] <= READ_P99_MS)}); "
              f"2,000-row batches: {read['batch_rows_per_s']:,.0f} rows/s")  # fmt: skip

        row = window.slice(0, 1).drop_columns(["isFraud", "isFlaggedFraud"]).to_pylist()[0]
        body = json.dumps(row)
        runs = {
            "without the store": api(args.bundle, None, "", False, body, args.seconds),
            "reading": api(args.bundle, redis.url, "bench:", False, body, args.seconds),
            "reading and recording": api(args.bundle, redis.url, "bench:", True, body, args.seconds),
        }
        print("\n2. API, one worker, single transactions:")
        base = runs["without the store"]
        for name, r in runs.items():
            verdict = "" if r is base else (
                f" (budgets >= {API_RPS:,}/s: {met(r['rps'] >= API_RPS)}, p99 <= {API_P99_MS} ms: "
                f"{met(r['paced_p99_ms'] <= API_P99_MS)}; {r['rps'] / base['rps']:.2f}x the throughput without)"
            )  # fmt: skip
            print(f"   {name:<22} {r['rps']:>8,.0f} req/s, paced 1,000/s p99 {r['paced_p99_ms']:.2f} ms, "
                  f"errors {r['errors']}{verdict}")  # fmt: skip

        with kafka_local.broker(get_settings()) as boot:
            figures = stream_runs(boot, args.bundle, redis.url, "bench-stream:", history, window, args.stream_rows,
                                  args.seconds)  # fmt: skip
        without, with_store = figures["without", "drain"], figures["with", "drain"]
        print(f"\n3. stream, {args.stream_rows:,} transactions drained: {with_store:,.0f}/s with the store against "
              f"{without:,.0f}/s without ({with_store / without:.2f}x; budget >= {STREAM_PER_S:,}/s: "
              f"{met(with_store >= STREAM_PER_S)})")  # fmt: skip
        print(
            f"   paced at 2,000/s: end-to-end p99 {figures['with', 'paced']:.1f} ms with the store and the watermark,"
            f" {figures['without', 'paced']:.1f} ms without (+{figures['with', 'paced'] - figures['without', 'paced']:.1f} ms)"
        )
        if args.memory_rows:
            memory(redis.url, args.memory_rows)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
