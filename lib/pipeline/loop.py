"""The loop's retraining trigger: 07's drift verdict or a firing live-recall alert starts a retraining run.

The run is 02-05 of the pipeline on the most recent window of the raw data (``params/retrain.yaml``:
``PROMOTION: live``; the windows are moved to the data's last steps), so it registers a new version as
the challenger and publishes it to the bundle store, where the API and the stream scorer pick it up
in shadow. It never becomes champion offline: ``registry promote --evidence live`` decides on the
labelled live results both models scored.

    python -m lib loop check [--drift runs/latest/outputs.json] [--prometheus http://127.0.0.1:9090]
    python -m lib loop retrain --raw data/recent/transactions.parquet [--if-needed ...]
"""

import json
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from lib.errors import ParameterError, SourceError
from lib.monitoring.drift import DriftSummary
from lib.pipeline import records

RETRAIN_ALERTS = ("FraudLiveRecallDropped", "FraudDataDrift")
PROFILE = "retrain"
STEPS = ("02_preprocess", "05_evaluate")  # --from, --until: preprocess, version, train, evaluate


@dataclass(frozen=True)
class DriftVerdict:
    """What the loop reads of a drift report (07's ``lib.monitoring.drift.DriftSummary`` has the same fields)."""

    detected: bool
    share: float
    drifted: list[str]


def drift_verdict(outputs: str | Path) -> DriftVerdict | None:
    """07_drift_report's verdict in a run's ``outputs.json`` (None when that run had no 07)."""
    path = Path(outputs)
    try:
        recorded = json.loads(path.read_text())
    except FileNotFoundError:
        raise SourceError(f"{path}: not found; run 07_drift_report (run_pipeline.py --only 07_drift_report)") from None
    if "07_drift_report" not in recorded:
        return None
    report = records.build(records.DriftReport, recorded["07_drift_report"])
    return DriftVerdict(report.drift_detected, report.drift_share, report.drifted_features)


def firing_alerts(prometheus: str, names: tuple[str, ...] = RETRAIN_ALERTS) -> list[dict]:
    """The alerts among ``names`` that Prometheus says are firing now."""
    url = f"{prometheus.rstrip('/')}/api/v1/alerts"
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            alerts = json.loads(response.read())["data"]["alerts"]
    except (OSError, ValueError, KeyError) as exc:
        raise SourceError(f"could not read the alerts of {url}: {exc}") from None
    return [a for a in alerts if a["state"] == "firing" and a["labels"].get("alertname") in names]


def reasons(drift: DriftVerdict | DriftSummary | None, alerts: list[dict]) -> list[str]:
    """Why the loop should retrain now (empty: it should not): 07's verdict (or its ``DriftSummary``), firing alerts."""
    found = []
    if drift is not None and drift.detected:
        found.append(f"07_drift_report: drift in {drift.share:.0%} of the features ({', '.join(drift.drifted)})")
    for alert in alerts:
        labels = {k: v for k, v in alert["labels"].items() if k not in ("alertname", "severity")}
        found.append(
            f"alert {alert['labels']['alertname']} firing ({', '.join(f'{k}={v}' for k, v in labels.items())})"
        )
    return found


def recent_windows(raw: str | Path, validation_steps: int, test_steps: int) -> dict[str, int]:
    """02's window parameters for the raw data's most recent steps: test = the last ``test_steps``
    steps it holds, validation the ``validation_steps`` before, training everything earlier."""
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    try:
        last = pc.max(ds.dataset(str(raw), format="parquet").to_table(columns=["step"]).column("step")).as_py()
    except (FileNotFoundError, OSError) as exc:
        raise SourceError(f"{raw}: no raw Parquet to retrain on ({exc}); run 01_acquire or give --raw") from None
    validation_end = last - test_steps
    train_end = validation_end - validation_steps
    if train_end < 1:
        raise ParameterError(
            f"{raw} ends at step {last}: too few steps for {validation_steps} validation and {test_steps} test steps"
        )
    return {"TRAIN_END_STEP": train_end, "VALIDATION_END_STEP": validation_end}
