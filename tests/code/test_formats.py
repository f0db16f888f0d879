"""Numbers on the run page and in the notebooks, as a reader writes them (issue: `0.00` fraud rates,
`43,985.00` counts, `2.66164e+08` money, throughput shown as seconds)."""

import pytest

from lib.pipeline.formats import show
from lib.pipeline.summary import cards


@pytest.mark.parametrize(
    ("name", "value", "shown"),
    [
        ("fraud_rate", 0.0012929, "0.13 %"),
        ("fraud_rate", 0.00004, "0.0040 %"),
        ("rows", 43985.0, "43,985"),
        ("stream_alerts", 450, "450"),
        ("saved_vs_no_model", 266164000.4, "266,164,000"),
        ("test_auprc", 0.978531193786648, "0.9785"),
        ("train_seconds", 2.44, "2.4 s"),
        ("stream_latency_p99_ms", 561.0, "561.0 ms"),
        ("per_s", 986.54, "987/s"),  # a bare kind, as the summary cards ask for it
        ("ms", 80.0, "80.0 ms"),
        ("drift_detected", False, "no"),
        ("champion_auprc", float("nan"), "n/a"),
    ],
)
def test_show_formats_by_the_kind_a_name_suggests(name, value, shown):
    assert show(name, value) == shown


def test_the_stream_card_says_throughput_per_second_and_latency_in_ms():
    outputs = {
        "06_stream": dict(
            stream_rate=1000, stream_end_to_end_per_s=986.54, stream_latency_p50_ms=80.0, stream_latency_p99_ms=561.0,
            stream_alert_precision=0.2667, stream_fraud_recall=0.9836, stream_dead_letters=0, stream_results=8136,
            stream_transactions=8136,
        )
    }  # fmt: skip
    (card,) = cards(outputs)
    assert card.headline == "8,136 scored on Kafka, 0 dead letters" and card.tone == "good"
    assert card.lines[:2] == ["987/s end to end at 1,000/s offered", "latency p50 80.0 ms, p99 561.0 ms"]
    unpaced = cards({"06_stream": {**outputs["06_stream"], "stream_rate": 0}})[0]
    assert "as fast as possible" in unpaced.lines[0] and "backlog" in unpaced.lines[1]
