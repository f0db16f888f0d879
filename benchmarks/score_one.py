"""Micro-benchmark: one transaction through the scoring core, in process, over the real sample.

Both paths in the same run, on the same model (the bundle re-exported into a temporary folder, so an
older bundle without ``model.so`` gets one):

* baseline: the batch path on one row (``features.compute`` on NumPy arrays, ``inplace_predict``),
  what ``Scorer.score_records([t])`` did before the compiled model;
* compiled: the scalar feature path and the trees compiled by TL2cgen (``lib.serving.compiled``).

Both score without reasons (``explain="none"``): the decision alone. Then what an alert's reasons add
(issue 36): the compiled path as served (``explain="alerts"``) over the same rows, and the alerts among
them alone, with their reasons against without, in the same run.

Targets: p50 and p99 <= 25 us per transaction; an alert's reasons <= 300 us extra (p50 and p99). Also
checks the two give the same probabilities, bit for bit.

    .venv/bin/python benchmarks/score_one.py [--bundle data/bundle] [--rows 20000]
"""

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TARGET_US = 25.0
TARGET_REASONS_US = 300.0  # an alert's reasons, extra (issue 36)


def timed(score, records) -> np.ndarray:
    """Microseconds per call, one call per record, after a warm-up of 1,000."""
    for record in records[:1000]:
        score([record])
    times = np.empty(len(records))
    clock = time.perf_counter_ns
    for i, record in enumerate(records):
        began = clock()
        score([record])
        times[i] = clock() - began
    return times / 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bundle", default=str(ROOT / "data" / "bundle"))
    parser.add_argument("--rows", type=int, default=20_000)
    args = parser.parse_args()
    import pyarrow.csv as pacsv

    from lib import features
    from lib.serving import scoring

    info, booster = scoring.load_bundle(args.bundle)
    folder = scoring.export_bundle(Path(tempfile.mkdtemp(prefix="score-one-")) / "bundle", booster, info)
    compiled = scoring.Scorer.from_folder(folder)
    if compiled.predictor != "tl2cgen":
        raise SystemExit("the bundle could not be compiled (TL2cgen and gcc needed): see the warning above")
    baseline = scoring.Scorer(info, booster)  # no compiled model: the batch path, one row
    sample = pacsv.read_csv(ROOT / "data" / "reference" / "paysim_real_sample.csv").select(features.INPUT_COLUMNS)
    records = sample.to_pylist()
    records = (records * (args.rows // len(records) + 1))[: args.rows]

    def decided(scorer):
        return lambda batch: scorer.score_records(batch, "none")

    figures = {name: timed(decided(s), records) for name, s in (("baseline", baseline), ("compiled", compiled))}
    got = np.array([compiled.score_records([r])[0].fraud_probability for r in records])
    want = np.array([baseline.score_records([r])[0].fraud_probability for r in records])
    trees = len(booster.get_dump())

    print(f"\none transaction in process, {len(records):,} calls over the real sample, model of {trees} trees")
    print(f"{'':34s}{'p50 us':>9s}{'p99 us':>9s}{'mean us':>9s}")
    for name, label in (("baseline", "baseline: NumPy + inplace_predict"), ("compiled", "scalar features + TL2cgen")):
        t = figures[name]
        print(f"{label:34s}{np.percentile(t, 50):9.1f}{np.percentile(t, 99):9.1f}{t.mean():9.1f}")
    p50, p99 = (np.percentile(figures["compiled"], q) for q in (50, 99))
    ratio = np.percentile(figures["baseline"], 50) / p50
    print(f"\nbaseline/compiled at p50: {ratio:.1f}x")
    print(f"compiled p50 {p50:.1f} us (target <= {TARGET_US:.0f}: {'met' if p50 <= TARGET_US else 'MISSED'}), "
          f"p99 {p99:.1f} us (target <= {TARGET_US:.0f}: {'met' if p99 <= TARGET_US else 'MISSED'})")  # fmt: skip
    same = int(np.count_nonzero(got == want))
    print(f"probabilities equal to the booster's bit for bit: {same:,} of {len(records):,}")

    alerts = [r for r in records if compiled.score_records([r], "none")[0].is_fraud]
    figures["as served"] = timed(compiled.score_records, records)  # explain="alerts": the apps' default
    plain, explained = timed(decided(compiled), alerts), timed(compiled.score_records, alerts)
    figures["alerts"], figures["alerts with reasons"] = plain, explained
    print(f"\nreasons (issue 36): {len(alerts):,} of {len(records):,} calls alert ({len(alerts) / len(records):.1%}) "
          "at the bundle's threshold")  # fmt: skip
    print(f"{'':34s}{'p50 us':>9s}{'p99 us':>9s}{'mean us':>9s}")
    for name in ("as served", "alerts", "alerts with reasons"):
        t = figures[name]
        print(f"{name:34s}{np.percentile(t, 50):9.1f}{np.percentile(t, 99):9.1f}{t.mean():9.1f}")
    extra = {q: np.percentile(explained, q) - np.percentile(plain, q) for q in (50, 99)}
    verdicts = ", ".join(
        f"p{q} +{extra[q]:.0f} us ({'met' if extra[q] <= TARGET_REASONS_US else 'MISSED'})" for q in (50, 99)
    )
    print(f"an alert's reasons add: {verdicts} (target <= {TARGET_REASONS_US:.0f} us extra)")
    summary = {name: {"p50_us": float(np.percentile(t, 50)), "p99_us": float(np.percentile(t, 99))}
               for name, t in figures.items()}  # fmt: skip
    print(json.dumps({"trees": trees, "rows": len(records), "alert_calls": len(alerts), **summary}))


if __name__ == "__main__":
    main()
