"""The defects a hostile-but-fair probe found, each reproduced with the probe's input and now refused:
unauthenticated memory growth, bodies read before the key, credentials in answers, unsafe outputs."""

import json
import os
import subprocess
import sys
import time
import urllib.request

import httpx
import psutil
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest

from lib import atomic
from lib.config import PROJECT_ROOT
from lib.local.daemons import free_port, listening
from tests.serving.conftest import KEY

pytestmark = pytest.mark.slow
CHUNK = b" " * (1 << 20)


@pytest.fixture
def server(bundle, tmp_path):
    """``python -m lib serve`` as a user starts it (uvicorn, one worker), its log captured."""
    port = free_port()
    log = (tmp_path / "server.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "lib", "serve", "--port", str(port), "--model", str(bundle)], cwd=PROJECT_ROOT,
        env={**os.environ, "FRAUD_API_KEYS": KEY}, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if listening("127.0.0.1", port) and httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200:
            break
        time.sleep(0.1)
    yield f"http://127.0.0.1:{port}", psutil.Process(process.pid)
    process.terminate()
    process.wait(timeout=30)
    log.close()


def chunked(megabytes: int):
    """A body with no Content-Length: httpx sends a generator as Transfer-Encoding: chunked."""
    for _ in range(megabytes):
        yield CHUNK


def test_chunked_bodies_without_a_key_do_not_grow_memory(server, transactions):
    url, process = server
    json_type, keyed = {"Content-Type": "application/json"}, {"Content-Type": "application/json", "X-API-Key": KEY}
    with httpx.Client(timeout=60) as client:
        client.post(f"{url}/v1/predict", json=transactions[0], headers={"X-API-Key": KEY})  # warm up every path once
        assert client.post(f"{url}/v1/predict/batch", content=chunked(20), headers=json_type).status_code == 401
        assert client.post(f"{url}/v1/predict/batch", content=chunked(20), headers=keyed).status_code == 413
        before = process.memory_info().rss
        for _ in range(10):  # the probe's 200 MB chunked request without a key, ten times over (2 GB in all)
            assert client.post(f"{url}/v1/predict/batch", content=chunked(200), headers=json_type).status_code == 401
        unauthenticated = process.memory_info().rss
        for _ in range(3):  # with a key: counted as it arrives, refused at the limit
            answer = client.post(f"{url}/v1/predict/batch", content=chunked(50), headers=keyed)
            assert answer.status_code == 413 and "exceeds the limit" in answer.json()["detail"]
        after = process.memory_info().rss
    grown = (unauthenticated - before) / 2**20, (after - before) / 2**20
    assert grown[0] < 5 and grown[1] < 5, f"RSS grew {grown[0]:.1f} MB without a key, {grown[1]:.1f} MB with one"


def test_the_key_is_checked_before_the_body_is_read(server, transactions):
    url, _ = server
    headers = {"Content-Type": "application/json"}
    assert httpx.post(f"{url}/v1/predict", content=b'{"step":', headers=headers).status_code == 401
    padded = json.dumps({"transactions": transactions[:10]}).encode() + b" " * (9 << 20)  # a valid batch, 9+ MB
    assert (
        httpx.post(f"{url}/v1/predict/batch", content=padded, headers={**headers, "X-API-Key": KEY}).status_code == 413
    )


def test_no_credential_reaches_an_answer_or_the_log(tmp_path):
    """A tracking URI with a password, and no model there: /readyz says why without the address, the log
    and `lib score` name it without the password."""
    port = free_port()
    shell = {k: v for k, v in os.environ.items() if not k.startswith("FRAUD_")}  # no bundle from other tests' settings
    env = {**shell, "FRAUD_API_KEYS": KEY, "MLFLOW_TRACKING_URI": f"http://alice:s3cr3t@127.0.0.1:{free_port()}",
           "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "3",
           "FRAUD_BUNDLE_STORE": str(tmp_path / "no-store")}  # the registry, not a bundle store, is asked  # fmt: skip
    log = tmp_path / "server.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "lib", "serve", "--port", str(port)], cwd=PROJECT_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
        )  # fmt: skip
        try:
            deadline, body = time.monotonic() + 120, None
            while time.monotonic() < deadline:
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2)
                except urllib.error.HTTPError as error:
                    body = json.loads(error.read())
                    if body["status"] == "failed":
                        break
                except OSError:
                    pass
                time.sleep(0.5)
        finally:
            process.terminate()
            process.wait(timeout=30)
    assert (
        body and body["status"] == "failed" and "s3cr3t" not in json.dumps(body) and "127.0.0.1" not in json.dumps(body)
    )
    assert "alice" not in json.dumps(body)
    text = log.read_text()
    assert "model_load_failed" in text and "s3cr3t" not in text
    done = subprocess.run(
        [sys.executable, "-m", "lib", "score", "--input", str(PROJECT_ROOT / "data/reference/paysim_real_sample.csv"),
         "--output", str(tmp_path / "s.csv")], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 1 and "error:" in done.stderr and "s3cr3t" not in done.stderr + done.stdout


def test_two_score_runs_to_one_output_never_corrupt_it(bundle, transactions, tmp_path):
    """Each writes its own temporary file; the last complete one wins, whole."""
    inputs = []
    for n, rows in enumerate((transactions[:600], transactions[600:])):
        table = pa.Table.from_pylist([{k: v for k, v in r.items() if k != "transaction_id"} for r in rows])
        pacsv.write_csv(table, tmp_path / f"in{n}.csv")
        inputs.append(len(rows))
    command = [
        sys.executable,
        "-m",
        "lib",
        "score",
        "--model",
        str(bundle),
        "--output",
        str(tmp_path / "out.csv"),
        "--input",
    ]
    runs = [subprocess.Popen([*command, str(tmp_path / f"in{n}.csv")], cwd=PROJECT_ROOT) for n in range(2)]
    assert [run.wait(timeout=300) for run in runs] == [0, 0]
    assert pacsv.read_csv(tmp_path / "out.csv").num_rows in inputs
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out.csv")] == []


def test_a_killed_writers_temporary_file_is_swept_by_the_next_write(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".out.json.{dead.stdout.strip()}-abcd1234.tmp"  # what a SIGKILLed writer leaves
    stale.write_text("half")
    atomic.write_text(tmp_path / "out.json", "{}")
    assert not stale.exists() and (tmp_path / "out.json").read_text() == "{}"


def test_the_cli_names_what_is_wrong_instead_of_a_traceback(tmp_path):
    def run(*args):
        return subprocess.run([sys.executable, *args], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120)

    sample = str(PROJECT_ROOT / "data/reference/paysim_real_sample.csv")
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    unwritable = run(
        "-m", "lib", "score", "--input", sample, "--output", str(blocked / "out.csv"), "--model", "no-bundle"
    )
    assert unwritable.returncode == 1 and "Traceback" not in unwritable.stderr
    replay = run("-m", "lib", "stream", "replay", "--bootstrap", f"127.0.0.1:{free_port()}", "--raw", sample)
    assert replay.returncode == 1 and "no Kafka broker answered" in replay.stderr and "Traceback" not in replay.stderr
    yaml = run("run_pipeline.py", "-p", "ROWS=[1", "--until", "01_acquire")
    assert yaml.returncode == 2 and "not valid YAML" in yaml.stderr
    for bad, message in (("ROWS=abc", "expects a whole number"), ("SAMPLE_SIZE=-1", "out of range")):
        refused = run("run_pipeline.py", "-p", bad, "--until", "01_acquire")
        assert refused.returncode == 2 and message in refused.stderr, refused.stderr
