"""The stream on a real broker against hostile input: a label flood (huge, coerced and malformed labels,
all dead-lettered, the early store bounded), a bundle store that breaks (the scorer never exits, never
crash-loops), and a lying scorer behind ``registry promote --evidence live``."""

import http.server
import json
import threading
import time

import numpy as np
import orjson
import pytest
from prometheus_client import CollectorRegistry

from lib.errors import ParameterError
from lib.model import promotion
from lib.serving import bundles, scoring
from lib.stream import kafka as stream
from lib.stream import live
from lib.stream import scorer as stream_scorer
from lib.stream.metrics import StreamMetrics
from tests.conftest import bundle_info

pytestmark = pytest.mark.slow


def test_a_label_flood_is_dead_lettered_and_the_early_store_stays_bounded(kafka, topics, window, bundle):
    """300 labels of 900 KB ids once took a scorer from 333 to 644 MB; coerced values (true, 0.7, "1", -0.9,
    1.999, a null id) were joined as if they were labels. Each is a dead letter now, with its reason."""
    big = [(b"C1", json.dumps({"transaction_id": "x" * 900_000, "isFraud": 1}).encode()) for _ in range(300)]
    coerced = [{"transaction_id": "t1", "isFraud": v} for v in (True, 0.7, "1", -0.9, 1.999, 7, None)]
    coerced += [{"transaction_id": None, "isFraud": 1}, {"transaction_id": "t" * 200, "isFraud": 0},
                {"transaction_id": "t2"}, {"transaction_id": "t3", "isFraud": 1, "extra": 1}]  # fmt: skip
    malformed = [(b"C2", orjson.dumps(label)) for label in coerced] + [(b"C3", b"{not json"), (b"C4", b"")]
    good = [(b"C5", orjson.dumps({"transaction_id": f"early-{i}", "isFraud": i % 2, "step": 3})) for i in range(50)]
    stream.replay(kafka.bootstrap, topics.labels, big + malformed + good, **{"message.max.bytes": 2_000_000})
    join = live.LabelJoin(capacity=1_000)
    worker = stream_scorer.StreamScorer(
        kafka.bootstrap, scoring.Scorer.from_folder(bundle), topics, batch_size=200, live=join,
        metrics=StreamMetrics(CollectorRegistry()),
    )  # fmt: skip
    worker.run(until=lambda w: w.dead_letters >= len(big) + len(malformed), idle_timeout=30)
    assert worker.dead_letters == len(big) + len(malformed)
    assert len(join.early) == 50 and all(len(k) <= 128 for k in join.early)  # the good ones wait for results
    letters = [orjson.loads(m.value()) for m in stream.read_topic(kafka.bootstrap, topics.dead_letter, idle=1.0)]
    assert {letter["reason"] for letter in letters} == {"does not follow the label contract"}
    assert all(
        letter["value_bytes"] <= 900_100 and len(letter["value"]) <= stream_scorer.KEPT_BYTES for letter in letters
    )


def test_the_scorer_waits_for_a_store_it_can_load_instead_of_exiting(kafka, topics, window, bundle, tmp_path):
    """`stream score` on a broken store exited and kept exiting on restart (a crash loop); it now says why
    once and waits, and scores once the store is fixed; a fault after that leaves the last good model scoring."""

    store = bundles.BundleStore(tmp_path / "bundles")
    booster = scoring.load_bundle(bundle)[1]
    for version in ("1", "2"):
        store.publish(
            scoring.export_bundle(tmp_path / f"b{version}", booster, bundle_info(model_version=version)), version
        )
    (store.folder / "aliases.json").write_text('["1"]')
    import subprocess
    import sys

    from lib.config import PROJECT_ROOT

    process = subprocess.Popen(
        [sys.executable, "-m", "lib", "stream", "score", "--bootstrap", kafka.bootstrap, "--topic-prefix", topics.prefix,
         "--model", str(store.folder), "--reload-interval", "0.2"],
        cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        line = process.stdout.readline()
        assert "waiting for a bundle store it can load" in line and "not an object of aliases" in line, line
        time.sleep(1.0)
        assert process.poll() is None  # still there, waiting
        store.set_aliases(champion=1)
        seen = ""
        deadline = time.monotonic() + 60
        while "assigned" not in seen and time.monotonic() < deadline:
            seen += process.stdout.readline()
        assert "serving paysim-fraud-detector v1" in seen and "assigned" in seen, seen
        (store.bundle(2) / "model.ubj").write_bytes(b"")
        store.set_aliases(champion=2)
        _, messages = window
        stream.replay(kafka.bootstrap, topics.transactions, messages[:2_000])
        scored = stream.read_topic(kafka.bootstrap, topics.scores, expect=2_000, timeout=120)
        assert {orjson.loads(m.value())["model_version"] for m in scored} == {"1"}
    finally:
        process.terminate()
        output = process.communicate(timeout=60)[0]
    assert process.returncode == 0 and "still serving paysim-fraud-detector v1: " in output and "model.ubj" in output


class LyingScorer(http.server.BaseHTTPRequestHandler):
    """A ``/live`` endpoint that answers what the test sets, slowly if asked."""

    answer: bytes = b"{}"
    trickle: float = 0.0

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.answer)))
        self.end_headers()
        for i in range(len(self.answer)):
            self.wfile.write(self.answer[i : i + 1])
            self.wfile.flush()
            time.sleep(self.trickle)

    def log_message(self, *_):
        pass


def serve(answer: dict | bytes, trickle: float = 0.0) -> tuple[str, http.server.HTTPServer]:
    handler = type(
        "Handler",
        (LyingScorer,),
        {"answer": answer if isinstance(answer, bytes) else json.dumps(answer).encode(), "trickle": trickle},
    )
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"127.0.0.1:{server.server_address[1]}", server


def answer(labels, scorer="host/1/abc", champion=None, challenger=None):
    rng = np.random.default_rng(0)
    n = len(labels)
    return {"scorer": scorer, "group": "g", "roles": {"1": "champion", "2": "challenger"},
            "window": {"labels": labels, "thresholds": {"1": 0.5, "2": 0.5},
                       "probabilities": {"1": champion or rng.random(n).tolist(), "2": challenger or rng.random(n).tolist()}}}  # fmt: skip


def test_a_lying_scorer_cannot_make_a_promotion():
    """One scorer listed twice counted once (20 frauds became 40 and passed --min-frauds 30); a label of 7, NaN
    probabilities (scored AUPRC 1.0), a malformed answer: refused by name; a trickling endpoint: bounded."""
    from lib.cli.stream import live_answers

    twenty = [1] * 20 + [0] * 980
    one, server = serve(answer(twenty))
    try:
        answers = live_answers([one, one.replace("127.0.0.1", "localhost")])
        assert len(answers) == 2
        evidence = promotion.live_evidence(answers, "1", "2")
        assert evidence.frauds == 20 and len(evidence.labels) == 1_000  # the same member once
    finally:
        server.shutdown()
    for lie, why in (
        (answer([7] * 10), "window.labels.0"),
        (answer([1, 0], champion=[float("nan"), 0.5]), "window.probabilities.1.0"),
        (answer([1, 0], challenger=[0.5]), "v2 has 1 probabilities for 2 labels"),
        ({"roles": "all"}, "scorer"),
    ):
        with pytest.raises(ParameterError, match="the stream scorer at s:1") as refused:
            promotion.live_evidence({"s:1": json.loads(json.dumps(lie, allow_nan=True))}, "1", "2")
        assert why in str(refused.value), refused.value
    slow, server = serve(b'{"scorer": "x"}' + b" " * 400, trickle=0.05)
    try:
        began = time.monotonic()
        with pytest.raises(ParameterError, match=r"still answering after 2 s|timed out"):
            live_answers([slow], timeout=2.0)
        assert time.monotonic() - began < 30  # bounded in total, not per read (it once hung past 100 s)
    finally:
        server.shutdown()
    not_json, server = serve(b"<html>")
    try:
        with pytest.raises(ParameterError, match="no live evidence"):
            live_answers([not_json])
    finally:
        server.shutdown()
