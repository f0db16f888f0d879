"""Numbers on the run page and in the notebooks, as a reader writes them, by the unit each record declares
(issue: `0.00` fraud rates, `43,985.00` counts, `2.66164e+08` money, throughput shown as seconds)."""

import dataclasses

import pytest

from lib.monitoring.stream_report import LiveAlerts, StreamSummary
from lib.pipeline import formats, records
from lib.pipeline.formats import show
from lib.pipeline.summary import cards
from lib.units import Rate, Unit, unit_of


@pytest.mark.parametrize(
    ("value", "unit", "shown"),
    [
        (0.0012929, Unit.RATE, "0.13 %"),
        (0.00004, Unit.RATE, "0.0040 %"),
        (43985.0, Unit.COUNT, "43,985"),
        (450, Unit.COUNT, "450"),
        (266164000.4, Unit.MONEY, "266,164,000"),
        (0.978531193786648, Unit.SCORE, "0.9785"),
        (2.44, Unit.SECONDS, "2.4 s"),
        (561.0, Unit.MS, "561.0 ms"),
        (986.54, Unit.PER_S, "987/s"),
        (12.5, Unit.PCT, "12.50 %"),
        (-3.25, Unit.CHANGE_PCT, "-3.25 %"),
        (1.5, Unit.PP, "+1.50 pp"),
        (False, Unit.TEXT, "no"),
        (float("nan"), Unit.SCORE, "n/a"),
        (0.1234567, Unit.TEXT, "0.1235"),  # undeclared: shown plainly, whatever its name
    ],
)
def test_show_formats_by_the_declared_unit(value, unit, shown):
    assert show(value, unit) == shown


def test_units_are_declared_with_the_field_not_guessed_from_its_name():
    @dataclasses.dataclass
    class Odd:
        rate_of_nothing: str  # a name that says "rate", declared text
        share: Rate | None = None

    assert unit_of(Odd, "rate_of_nothing") == Unit.TEXT and unit_of(Odd, "share") == Unit.RATE
    assert formats.shown(Odd("a", 0.5)).__dict__ == {"rate_of_nothing": "a", "share": "50.00 %"}


def stream_record(rate: float) -> dict:
    summary = StreamSummary(
        transactions=8136, results=8136, end_to_end_per_s=986.54, latency_p50_ms=80.0, latency_p95_ms=300.0,
        latency_p99_ms=561.0, latency_max_ms=700.0, warm_latency_p99_ms=41.0,
    )  # fmt: skip
    alerts = LiveAlerts(alerts=450, true_alerts=120, alert_precision=0.2667, fraud_recall=0.9836, frauds_in_window=122,
                        dead_letters=0)  # fmt: skip
    record = records.Stream(stream_rate=rate, offered_per_s=995.6, summary=summary, alerts=alerts, model_version="1",
                            labels_joined=7734, live_recall=0.98, live_precision=0.27)  # fmt: skip
    return {**dataclasses.asdict(record), "verdict": "..."}  # as outputs.json holds it


def test_the_stream_card_says_throughput_per_second_and_latency_in_ms():
    (card,) = cards({"06_stream": stream_record(1000)})
    assert card.headline == "8,136 scored on Kafka, 0 dead letters" and card.tone == "good"
    assert card.lines[:2] == [
        "987/s end to end at 1,000/s offered",
        "latency once warm: p99 41.0 ms; over the whole run p50 80.0 ms, p99 561.0 ms",
    ]
    unpaced = cards({"06_stream": stream_record(0)})[0]
    assert "as fast as possible" in unpaced.lines[0] and "backlog" in unpaced.lines[1]


def test_a_record_reads_back_typed_and_refuses_a_field_it_does_not_have():
    recorded = stream_record(1000)
    step = records.load("06_stream", recorded)
    assert isinstance(step.summary, StreamSummary) and step.alerts.alert_precision == 0.2667
    numbers = formats.numbers(step)
    assert numbers["summary.latency_p99_ms"] == (561.0, Unit.MS) and numbers["alerts.alerts"] == (450.0, Unit.COUNT)
    with pytest.raises(TypeError, match="no field"):
        records.load("06_stream", {**recorded, "stream_latency_p99_ms": 561.0})
