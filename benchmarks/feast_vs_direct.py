"""Benchmark: Feast's Redis online store against the direct client (issue 34's choice), side by side in one run.

Both on one local Redis (``lib.local.redis``) holding the same simulated history (``--rows`` transactions,
steps before the window). At the window's busiest step ``s``:

- **direct** (``lib.serving.online.OnlineStore``: redis-py + hiredis, pipelined): the raw per-step buckets are
  written by ``record`` (transactions/s) and a transaction's vector is computed at read time from them (one
  round trip): p50 / p99 of one transaction, rows/s of 2,000-row batches;
- **Feast** (``feast[redis]``, in its own environment: ``make feast-env``; ``feast_side.py``): Feast serves one
  precomputed row per entity, so the vectors at ``s`` (computed here by the direct store, for every account the
  history holds) are pushed (``PushMode.ONLINE``), then read back with ``get_online_features`` (both entities,
  all 14 features): push rows/s, p50 / p99 of one transaction, 2,000-row batches, and equality with the direct
  store's vectors on every read.

It also counts what keeping Feast's rows true costs: a window moves at each step without a new event, so
each step must re-push every account whose vector changed from ``s - 1`` to ``s``.

    make feast-env && .venv/bin/python benchmarks/feast_vs_direct.py [--rows 400000] [--reads 5000]
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from online_store import DELAY, READ_P99_MS, columns, met, month, reads, split  # noqa: E402

from lib.local.redis import LocalRedis  # noqa: E402
from lib.serving.online import OnlineStore  # noqa: E402

FEAST_PYTHON = ROOT / ".venv-feast" / "bin" / "python"
ENTITIES = ("nameDest", "nameOrig")


def vectors(store: OnlineStore, step: int, accounts: dict[str, list[str]]) -> dict[str, pd.DataFrame]:
    """Each account's own features as of ``step`` (one frame per entity: the account and its features)."""
    names = [f.name for f in store.spec]
    out = {}
    for entity in ENTITIES:
        mine = accounts[entity]
        other = next(accounts[e][0] for e in ENTITIES if e != entity)
        frame = {entity: mine, "step": [step] * len(mine)} | {e: [other] * len(mine) for e in ENTITIES if e != entity}
        matrix = store.read(frame)
        own = [j for j, f in enumerate(store.spec) if f.entity == entity]
        out[entity] = pd.DataFrame({entity: mine} | {names[j]: matrix[:, j] for j in own})
    return out


def moved(before: dict[str, pd.DataFrame], after: dict[str, pd.DataFrame]) -> int:
    """Accounts whose vector changed between two steps (with no transaction between them: the pushes owed)."""
    return sum(int((before[e].drop(columns=e).to_numpy() != after[e].drop(columns=e).to_numpy()).any(axis=1).sum())
               for e in ENTITIES)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=400_000, help="simulated transactions (history + window)")
    parser.add_argument("--window", type=int, default=150_000, help="transactions after the history")
    parser.add_argument("--reads", type=int, default=5_000, help="single-transaction reads, each side")
    args = parser.parse_args()
    if not FEAST_PYTHON.exists():
        raise SystemExit(f"{FEAST_PYTHON}: no Feast environment; run `make feast-env` first")
    history, window = split(month(args.rows), args.window)
    steps = window.column("step").to_numpy()
    busiest = int(np.bincount(steps).argmax())
    at_step = window.filter(pa.array(steps == busiest))
    reads_table = pa.concat_tables([at_step] * (args.reads // at_step.num_rows + 1)).slice(0, args.reads)
    print(f"history {history.num_rows:,} transactions; reads at step {busiest} ({at_step.num_rows:,} transactions)")

    with tempfile.TemporaryDirectory() as folder, LocalRedis(Path(folder) / "redis", max_memory="8gb") as redis:
        store = OnlineStore(redis.url, DELAY, prefix="bench:")
        began = time.perf_counter()
        store.backfill(columns(history))
        record_rate = history.num_rows / (time.perf_counter() - began)
        direct = reads(store, reads_table, args.reads)

        # every account the history or the reads hold (an account Feast lacks reads as missing, not as new)
        accounts = {e: sorted({*history.column(e).to_pylist(), *reads_table.column(e).to_pylist()}) for e in ENTITIES}
        now, before = vectors(store, busiest, accounts), vectors(store, busiest - 1, accounts)
        names = [f.name for f in store.spec]
        expected = store.read({c: reads_table.column(c).to_pylist() for c in ("step", *ENTITIES)})
        work = Path(folder)
        for entity, short in (("nameDest", "dest"), ("nameOrig", "orig")):
            now[entity].assign(at=pd.Timestamp.now(tz="UTC")).to_parquet(work / f"{short}.parquet")
        reads_frame = pd.DataFrame({e: reads_table.column(e).to_pylist() for e in ENTITIES})
        reads_frame[names] = expected
        reads_frame.to_parquet(work / "reads.parquet")
        answer = subprocess.run(
            [str(FEAST_PYTHON), str(ROOT / "benchmarks" / "feast_side.py"), "--redis", f"127.0.0.1:{redis.port}",
             "--db", "1", "--folder", str(work)], cwd=work, capture_output=True, text=True, check=False,
        )  # fmt: skip
        if answer.returncode:
            raise SystemExit(f"feast_side.py failed:\n{answer.stderr[-3000:]}")
        feast = json.loads(answer.stdout.strip().splitlines()[-1])
        owed = moved(before, now)

    print(f"\n{'':<34}{'direct (redis-py + hiredis)':>30}{'Feast ' + feast['feast'] + ' (Redis)':>26}")
    print(f"{'read one transaction, p50':<34}{direct['p50_ms']:>27.3f} ms{feast['p50_ms']:>23.3f} ms")
    print(f"{'read one transaction, p99':<34}{direct['p99_ms']:>27.3f} ms{feast['p99_ms']:>23.3f} ms")
    print(f"{'read 2,000-row batches':<34}{direct['batch_rows_per_s']:>22,.0f} rows/s"
          f"{feast['batch_rows_per_s']:>18,.0f} rows/s")  # fmt: skip
    print(f"{'write':<34}{record_rate:>14,.0f} transactions/s{feast['push_rows_per_s']:>13,.0f} vectors/s")
    print(
        f"\nread p99 budget <= {READ_P99_MS} ms: direct {met(direct['p99_ms'] <= READ_P99_MS)}, Feast "
        f"{met(feast['p99_ms'] <= READ_P99_MS)} ({feast['p99_ms'] / direct['p99_ms']:.1f}x the direct client's p99)"
    )
    print(
        f"Feast served the direct store's vector on {feast['equal']:,} of {feast['reads']:,} reads "
        f"({feast['features']} features, {feast['pushed_rows']:,} account rows pushed)"
    )
    print(f"keeping Feast true: from step {busiest - 1} to {busiest}, {owed:,} of {feast['pushed_rows']:,} accounts' "
          f"vectors changed with no transaction (windows move; an account's age grows); re-pushing them takes "
          f"{owed / feast['push_rows_per_s']:,.1f} s per step at Feast's push rate")  # fmt: skip


if __name__ == "__main__":
    main()
