"""The stream scorer's metrics: throughput by outcome, batch and end-to-end latency, consumer lag, errors,
and live performance per model version; served on ``/metrics`` with the live evidence on ``/live``."""

import json
import threading
from typing import Any

from prometheus_client import CollectorRegistry

from lib.serving.metrics import LATENCY_BUCKETS, BatchHistogram, ScoringMetrics
from lib.stream.live import LiveMetrics

# end-to-end latency reaches seconds when a broker restarts or a scorer is replaced
E2E_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class StreamMetrics(ScoringMetrics):
    """Scoring metrics plus the stream's: throughput by outcome, batch latency, end-to-end latency, lag."""

    def __init__(self, registry: CollectorRegistry) -> None:
        from prometheus_client import Counter, Gauge, Histogram

        super().__init__(registry, "stream")
        self.messages = Counter(
            "fraud_stream_messages",
            "Consumed messages by outcome (scored, dead_letter)",
            ["outcome"],
            registry=registry,
        )
        self.batch_latency = Histogram(
            "fraud_stream_batch_duration_seconds", "Time to validate, score, produce and commit one micro-batch",
            buckets=LATENCY_BUCKETS, registry=registry,
        )  # fmt: skip
        self.end_to_end = BatchHistogram(
            "fraud_stream_end_to_end_seconds", "From the transaction's produce time to its result being acknowledged",
            ("source", "stream"), E2E_BUCKETS, registry,
        )  # fmt: skip
        self.lag = Gauge(
            "fraud_stream_consumer_lag", "Messages not yet consumed, by partition", ["topic", "partition"],
            registry=registry,
        )  # fmt: skip
        self.errors = Counter("fraud_stream_errors", "Stream errors by kind", ["kind"], registry=registry)
        self.late = Counter(
            "fraud_stream_late_transactions", "Transactions after a later step of their partition (scored at once, "
            "with the state there was: their entity features may miss rows)", registry=registry,
        )  # fmt: skip
        self.held = Gauge(
            "fraud_stream_held_messages", "Transactions and labels held until the group's watermark passes their step",
            registry=registry,
        )  # fmt: skip
        for outcome in ("scored", "dead_letter"):
            self.messages.labels(outcome)
        self.live = LiveMetrics(registry)


def serve_metrics(host: str, port: int, registry: CollectorRegistry, worker: Any) -> Any:
    """Prometheus metrics on ``/metrics`` and the live evidence on ``/live`` (JSON), in a daemon thread."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?")[0]
            if path == "/live":
                body, kind = json.dumps(worker.evidence()).encode(), "application/json"
            elif path in ("/", "/metrics"):
                body, kind = generate_latest(registry), CONTENT_TYPE_LATEST
            else:
                self.send_error(404, "try /metrics or /live")
                return
            self.send_response(200)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: Any) -> None:  # scrapes every second: no access log
            pass

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return server
