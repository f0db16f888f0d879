"""06's report of the stream's results: the highest-scored alerts as an analyst reads them."""

import pandas as pd
import pyarrow as pa

from lib.monitoring import stream_report


def reason(text: str, contribution: float) -> dict:
    return {"code": "C", "feature": "f", "text": text, "value": 1.0, "contribution": contribution}


def test_top_alerts_are_the_highest_scored_alerts_once_each_with_their_reasons_in_words():
    results = pd.DataFrame({
        "transaction_id": ["a", "b", "b", "c", "d"],  # b re-scored (at-least-once): listed once
        "fraud_probability": [0.7, 0.99, 0.99, 0.1, 0.8],
        "is_fraud": [True, True, True, False, True],
        "reasons": [[reason("x", 1.0)], [reason("y", 2.5), reason("z", 0.25)], [reason("y", 2.5), reason("z", 0.25)],
                    [], [reason("w", 0.5)]],
    })  # fmt: skip
    window = pa.table({
        "transaction_id": ["a", "b", "c", "d"], "type": ["TRANSFER", "CASH_OUT", "PAYMENT", "TRANSFER"],
        "amount": [1.0, 2.0, 3.0, 4.0], "nameOrig": ["o"] * 4, "nameDest": ["d"] * 4, "isFraud": [1, 1, 0, 0],
    })  # fmt: skip
    table = stream_report.top_alerts(results, window, count=2)
    assert list(table.index) == ["b", "d"]
    assert table.loc["b", "reason 1"] == "y (+2.50)" and table.loc["b", "reason 2"] == "z (+0.25)"
    assert table.loc["b", "reason 3"] == "" and table.loc["d", "reason 1"] == "w (+0.50)"
    assert table.loc["b", "type"] == "CASH_OUT" and table.loc["d", "label (known later)"] == 0
