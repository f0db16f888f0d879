"""Benchmark: cost against rows for 01 -> 02 -> 04 on a local Spark standalone cluster, and the local trainer.

Runs the pipeline notebooks as ``run_pipeline.py`` does (papermill, one kernel per notebook) on 1x, 2x,
4x and 10x the public row count (6,362,620 ... 63,626,200), with ``SPARK_MASTER`` on a cluster of
``--workers`` workers started by ``lib.local.spark`` and ``TRAINER=spark`` (xgboost.spark), and
with ``TRAINER=local`` for the multiples given by ``--local-upto``. Keras is left out (``TRAIN_MLP=false``)
and XGBoost runs a fixed ``--rounds`` rounds (early stopping can never trigger), so every size does
the same work per row. While each notebook runs, the RSS of the driver (the notebook's kernel and its
Spark driver JVM) and of each executor (its JVM and its Python workers) is sampled every 0.25 s.

Prints, per step: seconds, seconds per million rows, peak driver and largest-executor RSS; the fitted
growth exponent k in time ~ rows^k (least squares on log-log, 1x..10x); driver RSS from 1x to 10x;
the local trainer's bytes per row and the row count where it would pass 24 GiB. Targets: k <= 1.1 for
every step, driver RSS flat within 20 %.

    .venv/bin/python benchmarks/scale.py [--multiples 1,2,4,10] [--workers 2] [--local-upto 2]
"""

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lib.data.simulate import FULL_ROWS  # noqa: E402
from lib.local.spark import LocalCluster  # noqa: E402
from lib.pipeline.runner import declared_parameters  # noqa: E402

STEPS = ("01_acquire", "02_preprocess", "04_train")
MACHINE_BYTES = 24 * 2**30


def tree_rss(process: psutil.Process, skip=lambda p: False) -> int:
    """RSS of ``process`` and its descendants (``skip``-ped ones and theirs left out)."""
    total = 0
    try:
        if skip(process):
            return 0
        total = process.memory_info().rss
        for child in process.children():
            total += tree_rss(child, skip)
    except psutil.NoSuchProcess:
        pass
    return total


def is_executor(process: psutil.Process) -> bool:
    try:
        return "CoarseGrainedExecutorBackend" in " ".join(process.cmdline())
    except psutil.Error:
        return False


class Sampler(threading.Thread):
    """Peak RSS of the driver and of the largest executor, per step, while ``runner`` runs."""

    def __init__(self, runner: subprocess.Popen) -> None:
        super().__init__(daemon=True)
        self.runner, self.step = psutil.Process(runner.pid), None
        self.peaks: dict[str, dict[str, int]] = {}

    def run(self) -> None:
        while self.runner.is_running() and self.runner.status() != psutil.STATUS_ZOMBIE:
            if self.step:
                kernels = [k for k in self.runner.children(recursive=True) if _kernel(k)]
                driver = sum(tree_rss(k, is_executor) for k in kernels)
                jvm = sum(tree_rss(c) for k in kernels for c in k.children(recursive=True) if _java(c))
                executors = [tree_rss(p) for p in psutil.process_iter() if is_executor(p)]
                peak = self.peaks.setdefault(self.step, {"driver": 0, "driver_jvm": 0, "executor": 0})
                peak["driver"] = max(peak["driver"], driver)
                peak["driver_jvm"] = max(peak["driver_jvm"], jvm)
                peak["executor"] = max(peak["executor"], max(executors, default=0))
            time.sleep(0.25)


def _kernel(process: psutil.Process) -> bool:
    try:
        return "ipykernel_launcher" in " ".join(process.cmdline())
    except psutil.Error:
        return False


def _java(process: psutil.Process) -> bool:
    try:
        return process.name() == "java"
    except psutil.Error:
        return False


def run_steps(rows: int, trainer: str, master: str, work: Path, rounds: int, executor_memory: str, steps=STEPS) -> dict:
    """``steps`` (01, 02, 04) on ``rows`` rows; {step: {seconds, driver, executor}}."""
    env = {
        **os.environ,
        "FRAUD_RUNS_DIR": str(work / "runs"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}",
        "FRAUD_MLFLOW_ARTIFACT_ROOT": (work / "artifacts").as_uri(),
    }
    params = {
        "ROWS": rows, "RAW_PATH": work / "raw.parquet", "PROCESSED_PATH": work / "processed",
        "MODELS_PATH": work / "models", "SPARK_MASTER": master, "TRAINER": trainer, "TRAIN_MLP": "false",
        "XGB_MAX_ROUNDS": rounds, "XGB_EARLY_STOPPING_ROUNDS": 10 * rounds, "SPARK_DRIVER_MEMORY": "2g",
        "SPARK_EXECUTOR_MEMORY": executor_memory,
    }  # fmt: skip
    declared = {name for s in steps for name in declared_parameters(ROOT / "notebooks" / f"{s}.ipynb")}
    command = [sys.executable, "run_pipeline.py", "--force", *(f"--only={s}" for s in steps)]
    command += [arg for k, v in params.items() if k in declared for arg in ("-p", f"{k}={v}")]
    runner = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    sampler = Sampler(runner)
    sampler.start()
    log = []
    for line in runner.stdout:
        log.append(line)
        for step in steps:
            if f"] {step} ..." in line:
                sampler.step = step
    runner.wait()
    sampler.join(timeout=5)
    if runner.returncode != 0:
        raise SystemExit(f"the pipeline failed at {rows:,} rows ({trainer}):\n{''.join(log[-60:])}")
    state = json.loads(max((work / "runs").glob("2*/run.json")).read_text())
    return {
        s: {"seconds": state["durations"][s], **sampler.peaks.get(s, {"driver": 0, "driver_jvm": 0, "executor": 0})}
        for s in steps
    }


def exponent(rows: list[int], seconds: list[float]) -> float:
    """k of seconds ~ rows^k, least squares on the logs."""
    x, y = [math.log(r) for r in rows], [math.log(s) for s in seconds]
    mx, my = sum(x) / len(x), sum(y) / len(y)
    return sum((a - mx) * (b - my) for a, b in zip(x, y, strict=True)) / sum((a - mx) ** 2 for a in x)


def gb(value: int) -> str:
    return f"{value / 2**30:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--multiples", default="1,2,4,10", help="multiples of the public row count")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--worker-memory", default="4g", help="memory of each worker (its executor)")
    parser.add_argument("--local-upto", type=float, default=2, help="run TRAINER=local up to this multiple")
    parser.add_argument("--rounds", type=int, default=30, help="XGBoost rounds, the same at every size")
    parser.add_argument("--work-dir", default=None, help="where the data goes (default: a temporary folder)")
    parser.add_argument("--steps", default=",".join(STEPS), help="a prefix of 01_acquire,02_preprocess,04_train")
    args = parser.parse_args()
    steps = tuple(args.steps.split(","))
    if steps != STEPS[: len(steps)]:
        parser.error(f"--steps must be a prefix of {','.join(STEPS)} (each step reads what the one before wrote)")
    multiples = [float(m) for m in args.multiples.split(",")]
    base = Path(args.work_dir or tempfile.mkdtemp(prefix="scale-"))
    results: dict[tuple[str, float], dict] = {}
    with LocalCluster(base / "cluster", workers=args.workers, cores=1, memory=args.worker_memory) as cluster:
        print(f"cluster {cluster.master_url}: {args.workers} workers x 1 core, {args.worker_memory}", flush=True)
        for multiple in multiples:
            rows = round(multiple * FULL_ROWS)
            work = base / f"{multiple:g}x"
            shutil.rmtree(work, ignore_errors=True)
            # TRAINER=spark runs 01, 02, 04; TRAINER=local then trains on the same processed data (04 alone)
            local = multiple <= args.local_upto and "04_train" in steps
            for trainer in ("spark", "local") if local else ("spark",):
                began = time.perf_counter()
                results[(trainer, multiple)] = run_steps(
                    rows, trainer, cluster.master_url, work, args.rounds, args.worker_memory,
                    steps if trainer == "spark" else ("04_train",),
                )  # fmt: skip
                print(f"{multiple:g}x ({rows:,} rows) TRAINER={trainer}: {time.perf_counter() - began:.0f} s "
                      f"{json.dumps(results[(trainer, multiple)])}", flush=True)  # fmt: skip
            shutil.rmtree(work, ignore_errors=True)
    report(results, multiples, steps)


def report(results: dict, multiples: list[float], steps: tuple[str, ...]) -> None:
    print(
        f"\n{'step':<14} {'trainer':<7} {'rows':>11} {'seconds':>8} {'s/M rows':>8} {'driver GB':>9} {'its JVM':>7} {'executor GB':>11}"
    )
    for (trainer, multiple), measured in sorted(results.items(), key=lambda kv: (kv[0][0] != "spark", kv[0][1])):
        rows = round(multiple * FULL_ROWS)
        for step, r in measured.items():
            print(f"{step:<14} {trainer:<7} {rows:>11,} {r['seconds']:>8.1f} {r['seconds'] / rows * 1e6:>8.2f} "
                  f"{gb(r['driver']):>9} {gb(r['driver_jvm']):>7} {gb(r['executor']):>11}")  # fmt: skip
    spark = [m for m in multiples if ("spark", m) in results]
    if len(spark) < 2:
        return  # one size: no growth to fit
    rows = [round(m * FULL_ROWS) for m in spark]
    print(f"\ngrowth exponent k (time ~ rows^k, {spark[0]:g}x..{spark[-1]:g}x, target <= 1.1):")
    for step in steps:
        k = exponent(rows, [results[("spark", m)][step]["seconds"] for m in spark])
        print(f"  {step:<14} k = {k:.3f}  {'met' if k <= 1.1 else f'MISSED by {k - 1.1:.3f}'}")
    first, last = results[("spark", spark[0])], results[("spark", spark[-1])]
    print(f"driver RSS {spark[0]:g}x -> {spark[-1]:g}x (target: within 20 %):")
    for step in steps:
        before, after = first[step]["driver"], last[step]["driver"]
        change = after / before - 1 if before else float("nan")
        verdict = "met" if abs(change) <= 0.2 else f"MISSED ({100 * change:+.0f} %)"
        print(f"  {step:<14} {gb(before)} -> {gb(after)} GB ({100 * change:+.1f} %)  {verdict}")
    local = sorted(m for (t, m) in results if t == "local")
    if len(local) >= 2:
        a, b = local[0], local[-1]
        peak_a, peak_b = results[("local", a)]["04_train"]["driver"], results[("local", b)]["04_train"]["driver"]
        per_row = (peak_b - peak_a) / ((b - a) * FULL_ROWS)
        ceiling = (MACHINE_BYTES - (peak_a - per_row * a * FULL_ROWS)) / per_row
        print(f"local trainer (04, both feature sets): {per_row:.0f} bytes per row of raw data "
              f"(peak {gb(peak_a)} GB at {a:g}x, {gb(peak_b)} GB at {b:g}x): it would pass 24 GiB at about "
              f"{ceiling:,.0f} rows ({ceiling / FULL_ROWS:.1f}x the public data set)")  # fmt: skip


if __name__ == "__main__":
    main()
