"""Benchmark (issue 36): what an alert's reasons cost a served request, against the code before them.

Two servers on 127.0.0.1, one worker each, the same bundle (re-exported with its compiled trees): this
checkout's ``python -m lib serve`` and the same command in a copy of ``--baseline-ref`` (``git archive``;
default ``99dd94a``, the last commit before reasons). Each is paced at 1,000 requests/s for ``--seconds``
(``serve_http.py``'s schedule: one request every millisecond on the next free of 12 connections), the
two alternately, twice each (medians), with:

* a non-alert (a genuine PAYMENT of the real sample): its answer carries ``"reasons": []`` and nothing
  else changes, so its p99 must stay the baseline's (target: within 10 % or 0.1 ms, the larger);
* an alert (a real PaySim fraud): ours gives its reasons (one TreeSHAP pass of the booster), the
  baseline does not; the p99 of both, and the difference.

The in-process cost of an alert's reasons is in ``score_one.py``, the stream's in ``stream_throughput.py``,
the Lambda package's size in ``lambda_package.py``.

    apt-get install wrk
    .venv/bin/python benchmarks/reasons.py [--bundle data/bundle] [--seconds 15] [--baseline-ref 99dd94a]
"""

import argparse
import io
import json
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from serve_http import KEY, free_port, start, stop, wrk  # noqa: E402

RATE = 1_000
UNCHANGED = (0.10, 0.1)  # a non-alert's p99: within 10 % or 0.1 ms of the baseline's, whichever is larger
BASELINE_REF = "99dd94a"  # the last commit before reasons (issue 36)


def checkout(ref: str, folder: Path) -> Path:
    """The project's files at ``ref`` (``git archive``), to run the baseline's code with this interpreter."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref], capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(folder, filter="data")
    return folder


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bundle", default=str(ROOT / "data" / "bundle"))
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--baseline-ref", default=BASELINE_REF)
    args = parser.parse_args()
    import pyarrow.csv as pacsv

    from lib import features
    from lib.serving import scoring

    info, booster = scoring.load_bundle(args.bundle)
    work = Path(tempfile.mkdtemp(prefix="reasons-bench-"))
    bundle = scoring.export_bundle(work / "bundle", booster, info)
    scorer = scoring.Scorer.from_folder(bundle)
    sample = pacsv.read_csv(ROOT / "data" / "reference" / "paysim_real_sample.csv").to_pylist()
    raw = [{k: r[k] for k in features.INPUT_COLUMNS} for r in sample]
    cases = {
        "non-alert": next(r for r, s in zip(raw, sample, strict=True) if s["type"] == "PAYMENT" and not s["isFraud"]),
        "alert": next(r for r, s in zip(raw, sample, strict=True) if s["isFraud"]),
    }
    answers = {name: scorer.score_records([t])[0] for name, t in cases.items()}
    if answers["non-alert"].is_fraud or not answers["alert"].is_fraud:
        raise SystemExit(f"the bundle's threshold does not split the two cases: {answers}")

    code = {"ours": ROOT, "baseline": checkout(args.baseline_ref, work / "baseline")}
    ports = {name: free_port() for name in code}
    servers = {}
    figures: dict[tuple[str, str], list[dict]] = {}
    try:
        for name, folder in code.items():
            command = [sys.executable, "-m", "lib", "serve", "--port", str(ports[name]), "--model", str(bundle)]
            servers[name] = start(command, ports[name], "/readyz", {"FRAUD_API_KEYS": KEY}, cwd=folder)
        for name in code:  # the baseline's answer has no reasons; ours names them for the alert
            url = f"http://127.0.0.1:{ports[name]}/v1/predict"
            wrk(url, json.dumps(cases["alert"]), 3, 4)  # warm-up
        for _ in range(2):
            for case, transaction in cases.items():
                for name in code:
                    url = f"http://127.0.0.1:{ports[name]}/v1/predict"
                    run = wrk(url, json.dumps(transaction), args.seconds, 12, rate=RATE)
                    figures.setdefault((case, name), []).append(run)
                    print(f"{case}, {name}: {run}", flush=True)
    finally:
        for server in servers.values():
            stop(server)

    def p99(case: str, name: str) -> float:
        return statistics.median(r["p99_ms"] for r in figures[(case, name)])

    def p50(case: str, name: str) -> float:
        return statistics.median(r["p50_ms"] for r in figures[(case, name)])

    print(f"\nsingle requests paced at {RATE:,}/s, {args.seconds} s each, medians of 2; baseline = {args.baseline_ref}")
    print("| transaction | code | p50 ms | p99 ms |")
    print("|---|---|---|---|")
    for case in cases:
        for name in code:
            print(f"| {case} | {name} | {p50(case, name):.2f} | {p99(case, name):.2f} |")
    ours, base = p99("non-alert", "ours"), p99("non-alert", "baseline")
    allowed = max(base * UNCHANGED[0], UNCHANGED[1])
    print(f"\nnon-alert p99: {ours:.2f} ms vs {base:.2f} ms before reasons ({ours / base:.2f}x; target within "
          f"{allowed:.2f} ms: {'met' if ours - base <= allowed else 'MISSED'})")  # fmt: skip
    extra = p99("alert", "ours") - p99("alert", "baseline")
    print(f"alert p99 with its reasons: {p99('alert', 'ours'):.2f} ms vs {p99('alert', 'baseline'):.2f} ms without "
          f"(+{extra:.2f} ms; no target: the in-process cost is score_one.py's)")  # fmt: skip
    summary = {f"{case}/{name}": {"p50_ms": p50(case, name), "p99_ms": p99(case, name)} for case, name in figures}
    print(json.dumps({"baseline_ref": args.baseline_ref, **summary}))


if __name__ == "__main__":
    main()
