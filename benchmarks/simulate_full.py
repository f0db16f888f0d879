"""Benchmark: simulate the full PaySim size (6,362,620 rows) to Parquet on this machine.

Target (acquire issue): <= 60 s wall and <= 4 GB peak memory. Prints rows/s, wall time and peak RSS,
then the fidelity figures at full scale (type counts vs published, frauds vs 8,213, signatures vs
the real sample).

    .venv/bin/python benchmarks/simulate_full.py [--rows N] [--out PATH] [--keep]
"""

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lib.config import PROJECT_ROOT
from lib.data import fidelity
from lib.data.acquire import write_batches
from lib.data.simulate import FULL_ROWS, simulate_batches

TARGET_SECONDS, TARGET_GB = 60.0, 4.0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=FULL_ROWS)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp()) / "paysim_full.parquet"

    began = time.perf_counter()
    write_batches(simulate_batches(args.rows, args.seed), out)
    seconds = time.perf_counter() - began
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # ru_maxrss is KiB on Linux
    print(f"rows            {args.rows:,}")
    print(
        f"wall time       {seconds:.1f} s   (target <= {TARGET_SECONDS:.0f} s: {'met' if seconds <= TARGET_SECONDS else 'MISSED'})"
    )
    print(f"throughput      {args.rows / seconds:,.0f} rows/s")
    print(
        f"peak RSS        {peak_gb:.2f} GB (target <= {TARGET_GB:.0f} GB: {'met' if peak_gb <= TARGET_GB else 'MISSED'})"
    )
    print(f"file            {out} ({out.stat().st_size / 1e6:,.0f} MB)")

    cols = fidelity.load_columns(out)
    real = fidelity.load_columns(PROJECT_ROOT / "data" / "reference" / "paysim_real_sample.csv")
    types = fidelity.type_table(cols, real)
    print("\ntype counts vs published totals (scaled to this size):")
    print(types[["rows", "published_rows_scaled", "rows_vs_published_pct", "frauds"]].round(3).to_string())
    totals = fidelity.fraud_totals(len(cols["isFraud"]), int(cols["isFraud"].sum()))
    print(
        f"\nfrauds {totals['frauds']:,} vs {totals['frauds_expected']:,.0f} expected ({totals['frauds_vs_expected_pct']:+.2f}%)"
    )
    print("\nbalance signatures (percent):")
    print(fidelity.signature_table(cols, real).drop(columns="signature").round(2).to_string())


if __name__ == "__main__":
    main()
