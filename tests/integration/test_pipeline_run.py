"""The README's run command on a small size: a finished run whose index links every report, checked in Chromium."""

import collections
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import orjson
import pytest

from lib.config import PROJECT_ROOT
from lib.features import ENTITY_FEATURES
from lib.hashing import content_sha256
from lib.local.daemons import free_port
from lib.pipeline.runner import discover
from tests.conftest import REAL_SAMPLE, copy_project, project_env, steps
from tests.integration.conftest import run_pipeline, wait_for

VENV_BIN = Path(sys.executable).parent
MODEL = "paysim-fraud-detector"

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def pipeline_run(tmp_path_factory):
    """The README's run command on 60,000 rows, in a copy of the checkout (never the checkout's own data)."""
    project = copy_project(tmp_path_factory.mktemp("pipeline"))
    done = run_pipeline(project, "-p", "ROWS=60000", "--force")
    return (project / "runs" / "latest").resolve(), done.stdout + done.stderr


NOISE = re.compile(r"ERROR|\bINFO\b|/tmp/tmp|Treelite|KeyboardInterrupt")  # /tmp/tmp…: a tempfile folder


def test_run_record_is_complete(pipeline_run):
    run_dir, terminal = pipeline_run
    assert (
        "finished" in terminal and "01_acquire: cell 1/" in terminal
    )  # plain progress lines (not a TTY) name the notebook
    # what a user reads in the terminal: progress and the result; no library's INFO line, no error that is
    # not one, no temporary build folder (MLflow's first database, TL2cgen's Treelite, a kernel's shutdown)
    assert [line for line in terminal.splitlines() if NOISE.search(line)] == []
    names = [p.stem for p in discover(PROJECT_ROOT / "notebooks")]
    index = (run_dir / "index.html").read_text()
    for name in names:
        assert (run_dir / f"{name}.ipynb").exists() and (run_dir / f"{name}.html").exists()
        assert f'href="{name}.html"' in index
    outputs = steps(run_dir)  # every step's typed record (lib.pipeline.records)
    acquired, trained, evaluated = outputs["01_acquire"], outputs["04_train"], outputs["05_evaluate"]
    assert acquired.rows == 60_000 and acquired.signatures_within_5pp is True
    assert outputs["02_preprocess"].n_entity_features == len(ENTITY_FEATURES)
    assert acquired.recurrence["sender_recurs"] < 1 and acquired.recurrence["genuine_tc_dest_recurs"] > 50
    variants = ("full", "full+entity", "realtime_safe", "realtime_safe+entity")
    assert set(evaluated.entity_ablation) == {f"{w} · {v}" for w in ("test window", "real rows") for v in variants}
    assert all(0 < auprc <= 1 for auprc in evaluated.entity_ablation.values())
    assert set(evaluated.prequential_auprc) == set(variants)
    for candidate in ("xgboost_full", "xgboost_realtime_safe", "keras_mlp_full", "keras_mlp_realtime_safe"):
        assert (
            0 < trained.candidates[candidate].validation_auprc <= 1 and 0 < evaluated.scorecards[candidate].auprc <= 1
        )
    assert evaluated.promoted is True and evaluated.champion_version == "1"  # a fresh registry
    assert evaluated.scorecards["xgboost_full"].auprc > 0.8
    assert trained.candidates["xgboost_full"].best_iteration + 1 >= 5  # early stopping on logloss keeps trees, not one
    project = run_dir.parent.parent
    bundle = json.loads((project / "data" / "bundle" / "bundle.json").read_text())
    assert bundle["model_version"] == "1" and bundle["training_data_sha256"] == trained.training_data_sha256
    streamed = outputs["06_stream"]  # the whole test window through a real broker, every one scored
    manifest = json.loads((project / "data" / "processed" / "manifest.json").read_text())
    assert streamed.summary.transactions == manifest["splits"]["test"]["rows"] > 0
    assert streamed.alerts.dead_letters == 0 and streamed.model_version == "1"
    memory = streamed.memory  # per-account memory from a Redis of the run's own, behind the watermark
    assert memory is not None and memory.logged > 100 and memory.equal == memory.logged and memory.destinations > 0
    assert f"{memory.equal:,} of {memory.logged:,} served entity vectors equal to 02" in index
    drifted = outputs["07_drift_report"]  # a stationary simulation: no drift
    assert drifted.drift_detected is False and drifted.current_rows == streamed.summary.transactions
    assert drifted.skew is not None and drifted.skew.checked == memory.logged and drifted.skew.mismatched == 0
    for href in drifted.links.values():
        assert (run_dir / href).is_file() and f'href="{href}"' in index
    versioned = outputs["03_version"]
    assert set(versioned.dvc_versions) == {"data/raw", "data/processed"}
    assert versioned.dvc_versions["data/raw"]["md5"] in index  # the data version is on the run's page
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    run = client.search_runs(client.search_experiments()[0].experiment_id)[-1]
    assert run.data.tags["dvc.data/raw"] == versioned.dvc_versions["data/raw"]["md5"]
    assert run.data.metrics["05_evaluate.scorecards.xgboost_full.auprc"] == evaluated.scorecards["xgboost_full"].auprc
    logged = {a.path for a in client.list_artifacts(run.info.run_id, "reports/07_drift_report")}
    assert {"reports/07_drift_report/data_drift.html", "reports/07_drift_report/classification_quality.html",
            "reports/07_drift_report/feature_skew.html"} <= logged  # fmt: skip


def test_rerun_uses_the_cache_and_data_versions_restore(pipeline_run):
    run_dir, _ = pipeline_run
    home = run_dir.parent.parent
    first = steps(run_dir)
    again = run_pipeline(home, "-p", "ROWS=60000").stdout
    assert "01_acquire: skipped" in again and "02_preprocess: skipped" in again and "03_version done" in again
    assert "04_train: skipped" in again and "05_evaluate done" in again  # same data: no retraining
    gate = steps(home / "runs" / "latest")["05_evaluate"]
    assert gate.promoted is False and gate.challenger_version is None and gate.champion_version == "1"
    assert "byte-identical" in gate.gate_reason  # the same model is not registered a second time
    changed = run_pipeline(home, "-p", "ROWS=60000", "-p", "SEED=43", "--until", "02_preprocess").stdout
    assert "01_acquire: skipped" not in changed and "02_preprocess: skipped" not in changed
    # bring back the first run's data after deleting the copy's working data; 02 recomputes the very same features
    for folder in ("raw", "processed"):
        shutil.rmtree(home / "data" / folder)
    restored = run_pipeline(home, "--data-version", run_dir.name, "--from", "02_preprocess").stdout
    assert "restored" in restored and "02_preprocess done" in restored
    raw_hash = first["01_acquire"].data_outputs["raw"]["sha256"]
    assert content_sha256(home / "data" / "raw" / "transactions.parquet") == raw_hash
    again_outputs = steps(home / "runs" / "latest")
    assert again_outputs["03_version"].dvc_versions["data/raw"] == first["03_version"].dvc_versions["data/raw"]
    # the recomputed features are the same bytes
    recomputed = again_outputs["02_preprocess"].data_outputs["processed"]["sha256"]
    assert recomputed == first["02_preprocess"].data_outputs["processed"]["sha256"]


def test_drift_scenario_is_flagged_and_pushed_to_a_pushgateway(pipeline_run, tmp_path):
    """01 with the simulator's drift scenario from the test window on, 02, then 07 against the champion:
    drift detected, and the summary lands in a real Pushgateway for the FraudDataDrift alert."""
    import shutil
    import subprocess
    import urllib.request

    from tests.integration.conftest import free_port, wait_for

    binary = shutil.which("prometheus-pushgateway")
    if not binary:
        pytest.skip("apt-get install prometheus-pushgateway")
    home = pipeline_run[0].parent.parent
    port = free_port()
    gateway = subprocess.Popen(
        [binary, f"--web.listen-address=127.0.0.1:{port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_for(
            lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready").status == 200,
            "Pushgateway",
            process=gateway,
        )
        drifting = [
            "-p",
            "DRIFT_START_STEP=401",
            "-p",
            "DRIFT_AMOUNT_FACTOR=3",
            "-p",
            "DRIFT_FRAUD_PATTERN=partial_drain",
        ]
        selected = ["--only", "01_acquire", "--only", "02_preprocess", "--only", "07_drift_report"]
        run_pipeline(home, "-p", "ROWS=60000", *drifting, *selected, env={"PUSHGATEWAY_URL": f"127.0.0.1:{port}"})
        report = steps(home / "runs" / "latest")["07_drift_report"]
        pushed = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
    finally:
        gateway.terminate()
        gateway.wait()
    assert report.drift_detected is True and "log_amount" in report.drifted_features, report
    assert report.quality_current.minus(report.quality_reference).recall < 0  # the partial drains slip past the model
    from prometheus_client.parser import text_string_to_metric_families

    values = {
        sample.name: sample.value
        for family in text_string_to_metric_families(pushed)
        for sample in family.samples
        if sample.labels.get("job") == "fraud_drift_report"
    }
    assert values["fraud_drift_detected"] == 1 and values["fraud_drift_share"] == pytest.approx(report.drift_share)


@pytest.mark.browser
def test_index_and_every_linked_report_load_in_chromium(pipeline_run, browser):
    run_dir, _ = pipeline_run
    broken_images = "return [...document.images].filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src)"
    browser.set_window_size(1366, 768)
    browser.get((run_dir / "index.html").as_uri())
    assert "Pipeline run" in browser.title
    # how the run went, in the first screen of a laptop: one card per stage, numbers as people write them
    titles = [
        h.get_attribute("textContent") for h in browser.find_elements("css selector", ".card h3")
    ]  # CSS capitalises
    assert titles == ["Data", "Champion", "Registry gate", "Stream", "Drift"]
    cards_bottom = (
        "return Math.max(...[...document.querySelectorAll('.card')].map(c => c.getBoundingClientRect().bottom))"
    )
    assert browser.execute_script(cards_bottom) <= browser.execute_script("return window.innerHeight")
    text = browser.find_element("tag name", "body").text
    assert not re.search(r"\d\.\d+e[+-]\d", text) and "xgboost_full" in text  # no 2.66164e+08, the candidates listed
    links = [a.get_attribute("href") for a in browser.find_elements("tag name", "a")]
    reports = [href for href in links if href.endswith((".html", ".ipynb", ".json", ".yaml"))]
    pages = [r for r in reports if re.search(r"/\d\d_[a-z0-9_]+\.html$", r)]
    assert len(pages) == len(discover(PROJECT_ROOT / "notebooks"))
    assert any(r.endswith("07_drift_report/data_drift.html") for r in reports)
    assert browser.execute_script(broken_images) == []
    for href in reports:
        browser.get(href)
        body = browser.find_element("tag name", "body").text
        assert body.strip(), f"{href} rendered empty"
        assert "ERR_FILE_NOT_FOUND" not in browser.page_source, href
        if href.endswith(".html"):
            assert browser.execute_script(broken_images) == [], href
            images = browser.execute_script("return document.images.length")
            if "01_acquire" in href:
                assert images >= 2  # the fidelity plots are really there


# --- the README's next steps, after `make run`, in the same project ---------------------------------


@contextlib.contextmanager
def started(project, command: list[str], ready_url: str, what: str, **env: str):
    """``command`` running in ``project`` as the README gives it, once ``ready_url`` answers 200."""
    log = project / f".{what}.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            command, cwd=project, env=project_env(project, **env), stdout=out, stderr=subprocess.STDOUT
        )
        try:
            wait_for(lambda: urllib.request.urlopen(ready_url, timeout=2).status == 200, what, 180, process)
            yield
        finally:
            process.terminate()
            process.wait(30)


def get_json(url: str, key: str | None = None) -> dict:
    request = urllib.request.Request(url, headers={"X-API-Key": key} if key else {})
    with urllib.request.urlopen(request, timeout=10) as answer:
        return json.loads(answer.read())


def test_next_steps_mlflow_ui_shows_the_run_as_model_training(pipeline_run):
    project = pipeline_run[0].parent.parent
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    command = [str(VENV_BIN / "mlflow"), "ui", "--backend-store-uri", "sqlite:///mlflow.db", "--port", str(port)]
    with started(project, command, f"{base}/health", "mlflow-ui"):
        found = get_json(f"{base}/ajax-api/2.0/mlflow/experiments/get-by-name?experiment_name=fraud-detection-pipeline")
        tags = {t["key"]: t["value"] for t in found["experiment"]["tags"]}
        assert tags["mlflow.experimentKind"] == "custom_model_development"  # runs and models, not the GenAI view
        champion = get_json(f"{base}/ajax-api/2.0/mlflow/registered-models/alias?name={MODEL}&alias=champion")
        assert champion["model_version"]["version"] == "1"


def test_next_steps_serve_answers_with_the_champion_and_offline_docs(pipeline_run):
    project = pipeline_run[0].parent.parent
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "lib", "serve", "--port", str(port)]  # the champion 05 published to the store
    with started(project, command, f"{base}/readyz", "serve", FRAUD_API_KEYS="dev-key"):
        assert get_json(f"{base}/v1/model", "dev-key")["model_version"] == "1"
        docs = urllib.request.urlopen(f"{base}/docs", timeout=10).read().decode()
        assert "swagger-ui" in docs and "cdn." not in docs  # Swagger UI served by the app itself
    assert f"http://127.0.0.1:{port}/docs" in (project / ".serve.log").read_text()  # it says where it listens


def test_next_steps_jupyterlab_opens_the_notebooks_with_the_project_kernel(pipeline_run):
    project = pipeline_run[0].parent.parent
    assert "\t$(BIN)/jupyter lab --notebook-dir=.\n" in (PROJECT_ROOT / "Makefile").read_text()  # what `make lab` runs
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    command = [str(VENV_BIN / "jupyter"), "lab", "--notebook-dir=.", "--no-browser", f"--port={port}",
               "--IdentityProvider.token=", "--ServerApp.password="]  # fmt: skip
    command += ["--allow-root"] if os.geteuid() == 0 else []  # CI runs as root; Jupyter refuses root without it
    with started(project, command, f"{base}/api/status", "lab"):
        names = {item["name"] for item in get_json(f"{base}/api/contents/notebooks")["content"]}
        assert {p.name for p in discover(project / "notebooks")} <= names
        specs = get_json(f"{base}/api/kernelspecs")
        kernel = specs["kernelspecs"][specs["default"]]["spec"]["argv"][0]
        assert Path(kernel).resolve() == Path(sys.executable).resolve() or kernel == "python"
        assert urllib.request.urlopen(f"{base}/lab/tree/notebooks/01_acquire.ipynb", timeout=10).status == 200


def test_next_steps_your_own_file_as_source(tmp_path):
    """`run_pipeline.py -p SOURCE=path/to/file.csv`: 01 validates the user's file into the raw Parquet."""
    project = copy_project(tmp_path)
    own_file = project / REAL_SAMPLE.relative_to(PROJECT_ROOT)  # the copy's, as a user's file would be
    run_pipeline(project, "--only=01_acquire", "-p", f"SOURCE={own_file}", "--force")
    acquired = steps(project / "runs" / "latest")["01_acquire"]
    assert acquired.rows == 19_999 and acquired.frauds > 0 and str(own_file) in acquired.source


# --- the closed loop, after the run, in the same project (last: it moves the champion) ---------------


def _live(port: int) -> dict:
    return get_json(f"http://127.0.0.1:{port}/live")


def _prometheus(url: str, expr: str) -> list:
    return get_json(f"{url}/api/v1/query?{urllib.parse.urlencode({'query': expr})}")["data"]["result"]


def test_the_closed_loop_end_to_end(pipeline_run, kafka, tmp_path):
    """v1 serves; the drift scenario streams with delayed labels; 07 detects the drift; retraining
    registers v2 as challenger; v2 runs in shadow; promoted on live evidence; the scorer and the API
    switch to v2 without a restart or a failed request; Prometheus shows both versions' live figures."""
    import threading

    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from lib.data.acquire import read_window
    from lib.local.monitoring import LocalMonitoring
    from lib.monitoring import stream_report
    from lib.stream import kafka as stream
    from lib.stream import process as scorer_process

    if not shutil.which("prometheus"):
        pytest.fail("prometheus is missing; .ci/run installs it") if os.environ.get("CI") else pytest.skip("prometheus")
    home = pipeline_run[0].parent.parent
    env = project_env(home)
    store = home / "data" / "bundles"
    assert json.loads((store / "aliases.json").read_text())["champion"] == "1"

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "lib", *args], cwd=home, env=env, capture_output=True,
                              text=True, timeout=1800)  # fmt: skip

    # the same world from step 401 on: amounts x3, fraudsters draining only part of the balance
    drift = tmp_path / "drift.parquet"
    made = cli("simulate", "--rows", "200000", "--seed", "42", "--out", str(drift), "--drift-start-step", "401",
               "--drift-amount-factor", "3", "--drift-fraud-pattern", "partial_drain")  # fmt: skip
    assert made.returncode == 0, made.stderr
    # 07 judges what the stream scored in the test window's steps (401-743) against the training window:
    # v1 scores 401-600 alone, retraining learns from everything up to 600 (its last 100 steps for
    # validation and test), and both models score 601-743, which neither saw
    seen_first, seen_later = read_window(drift, 401, 600), read_window(drift, 601, 743)
    topics = stream.Topics("loop.")
    stream.ensure_topics(kafka.bootstrap, topics)
    scorer_port, api_port = free_port(), free_port()
    scorer = scorer_process.start_scorer_process(
        kafka.bootstrap, topics, store, "--metrics-port", str(scorer_port), "--reload-interval", "1",
        "--label-window", "200000", "--label-capacity", "200000", env=env,
    )  # fmt: skip
    api_log = (tmp_path / "api.log").open("w")
    api = subprocess.Popen([sys.executable, "-m", "lib", "serve", "--port", str(api_port), "--model", str(store),
                            "--reload-interval", "1"], cwd=home, env={**env, "FRAUD_API_KEYS": "loop-key"},
                           stdout=api_log, stderr=subprocess.STDOUT)  # fmt: skip
    monitoring = LocalMonitoring(tmp_path / "monitoring", f"127.0.0.1:{api_port}", f"127.0.0.1:{scorer_port}",
                                 scrape_interval="1s")  # fmt: skip
    answers: list[tuple[int, str]] = []
    stop = threading.Event()
    transactions = [orjson.loads(value) for _, value in stream.encode_transactions(seen_later.slice(0, 500))]

    def api_load() -> None:
        import httpx

        with httpx.Client(base_url=f"http://127.0.0.1:{api_port}", headers={"X-API-Key": "loop-key"}) as client:
            for i in range(1_000_000):
                if stop.wait(0.01):
                    return
                response = client.post("/v1/predict", json=transactions[i % len(transactions)])
                answers.append((response.status_code, response.json().get("model_version", "-")))

    timings, began = {}, time.monotonic()
    load = threading.Thread(target=api_load)
    try:
        monitoring.start()
        wait_for(lambda: get_json(f"http://127.0.0.1:{api_port}/readyz")["model_version"] == "1", "API", process=api)
        load.start()
        # 1. v1 serves steps 401-600 of drifted traffic; each label comes 2 steps later, 5 % never
        labels = stream.DelayedLabels.of(seen_first, topics.labels, 2, 0.05, seed=1)
        stream.replay(kafka.bootstrap, topics.transactions, stream.encode_transactions(seen_first), labels=labels)
        wait_for(lambda: _live(scorer_port)["labels"]["joined"] >= labels.messages.__len__(), "labels", 180, scorer)
        timings["labelled_first_window_s"] = time.monotonic() - began
        # 2. drift is detected: 07 on exactly what the stream scored
        results = stream_report.results_frame(stream.read_topic(kafka.bootstrap, topics.scores, seen_first.num_rows))
        stream_report.save_results(results, home / "data" / "stream" / "loop.parquet")
        run_pipeline(home, "--only", "07_drift_report", "-p", "CURRENT=stream", "-p", f"RAW_PATH={drift}",
                     "-p", "STREAM_RESULTS_PATH=data/stream/loop.parquet")  # fmt: skip
        outputs = home / "runs" / "latest" / "outputs.json"
        verdict = steps(outputs.parent)["07_drift_report"]
        assert verdict.drift_detected and verdict.retrain_reasons, verdict
        checked = cli("loop", "check", "--drift", str(outputs), "--prometheus", monitoring.prometheus_url)
        assert checked.returncode == 0 and checked.stdout.startswith("retrain: 07_drift_report: drift"), checked
        timings["drift_detected_s"] = time.monotonic() - began
        # 3. retraining on the labelled recent window registers v2 as the challenger: shadow, not champion
        recent = home / "data" / "recent" / "transactions.parquet"  # 03 versions the raw file's folder
        recent.parent.mkdir()
        pq.write_table(pq.read_table(drift).filter(pc.less_equal(pc.field("step"), 600)), recent)
        retrained = cli("loop", "retrain", "--if-needed", "--drift", str(outputs), "--raw", "data/recent/transactions.parquet",
                        "--validation-steps", "50", "--test-steps", "50", "-p", "TRAIN_MLP=false")  # fmt: skip
        assert retrained.returncode == 0, retrained.stdout[-3000:] + retrained.stderr[-3000:]
        evaluated = steps(outputs.parent)["05_evaluate"]
        assert evaluated.challenger_version == "2" and evaluated.champion_version == "1", evaluated
        assert "awaiting live evidence" in evaluated.gate_reason
        wait_for(lambda: _live(scorer_port)["roles"] == {"1": "champion", "2": "challenger"}, "scorer shadow", 60)
        wait_for(lambda: get_json(f"http://127.0.0.1:{api_port}/readyz").get("shadow_version") == "2", "API shadow", 60)
        timings["challenger_in_shadow_s"] = time.monotonic() - began
        # 4. the later steps, both models scoring (the README's replay); labels come in; the live evidence decides
        replayed = cli("stream", "replay", "--bootstrap", kafka.bootstrap, "--topic-prefix", topics.prefix,
                       "--raw", str(drift), "--first-step", "601", "--label-delay-steps", "2",
                       "--label-missing-share", "0.05")  # fmt: skip
        assert replayed.returncode == 0 and f"{seen_later.num_rows:,} transactions" in replayed.stdout, replayed
        published = int(replayed.stdout.split("; ")[1].split(" labels")[0].replace(",", ""))
        wait_for(lambda: len(_live(scorer_port)["window"]["labels"]) >= published, "shadow labels", 180)
        time.sleep(3)  # a few scrapes of both versions' live figures
        shown = {r["metric"]["model_version"] for r in _prometheus(monitoring.prometheus_url, "fraud_live_auprc")}
        assert shown == {"1", "2"}, shown
        promoted = cli("registry", "promote", "--evidence", "live", "--scorer", f"127.0.0.1:{scorer_port}",
                       "--min-frauds", "20", "--store", str(store))  # fmt: skip
        assert promoted.returncode == 0 and promoted.stdout.startswith("promoted:"), promoted.stdout + promoted.stderr
        wait_for(lambda: _live(scorer_port)["roles"] == {"2": "champion"}, "scorer swap", 60)
        wait_for(lambda: get_json(f"http://127.0.0.1:{api_port}/readyz")["model_version"] == "2", "API swap", 60)
        timings["promoted_and_swapped_s"] = time.monotonic() - began
        time.sleep(1)
    finally:
        stop.set()
        if load.is_alive():
            load.join(timeout=60)
        monitoring.stop()
        api.terminate()
        api.wait(timeout=30)
        output = scorer_process.stop_scorer_process(scorer)
    statuses = collections.Counter(status for status, _ in answers)
    versions = [version for _, version in answers]
    assert statuses == {200: len(answers)} and versions[0] == "1" and versions[-1] == "2", statuses
    assert "1" not in versions[versions.index("2") :]
    assert "serving paysim-fraud-detector v2" in output and output.count("serving ") == 2, output
    ids = set(seen_first.column("transaction_id").to_pylist()) | set(seen_later.column("transaction_id").to_pylist())
    scored = {
        orjson.loads(m.value())["transaction_id"] for m in stream.read_topic(kafka.bootstrap, topics.scores, len(ids))
    }
    assert scored == ids
    print(f"\nclosed loop: {json.dumps({k: round(v, 1) for k, v in timings.items()})}; {promoted.stdout.strip()}")
