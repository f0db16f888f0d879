"""The scoring core: one serving bundle, the shared feature spec on NumPy, the native XGBoost booster.

Every scoring path (``python -m lib score``, the APIs, the stream) loads a bundle with
``load_bundle`` and scores raw transactions with ``Scorer``. A bundle is a folder:
``bundle.json`` (model name and registry version, feature set and spec version, decision
threshold, training data hash) and ``model.ubj`` (XGBoost's own binary JSON; no pickle anywhere).
"""

import json
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import xgboost as xgb

from lib import atomic, features
from lib.errors import ParameterError, PipelineError

BUNDLE_FILE = "bundle.json"
MODEL_FILE = "model.ubj"
BUNDLE_ARTIFACT = "serving_bundle"  # 05_evaluate logs version N's bundle under serving_bundle/vN of its run


def bundle_artifact_path(version: str | int) -> str:
    """Where a registered version's bundle lives in its run (one run can back several versions)."""
    return f"{BUNDLE_ARTIFACT}/v{version}"


class BundleError(PipelineError):
    """A serving bundle is missing, incomplete or made for another feature spec."""


@dataclass(frozen=True)
class BundleInfo:
    """What a bundle says about its model (the ``bundle.json`` contract)."""

    model_name: str
    model_version: str
    feature_set: str
    feature_spec_version: str
    features: list[str]
    threshold: float
    training_data_sha256: str
    candidate: str
    test_auprc: float | None = None
    created: str = ""


def export_bundle(folder: str | Path, booster: xgb.Booster, info: BundleInfo) -> Path:
    """Write a bundle folder atomically (a failed export leaves the previous bundle)."""
    if list(info.features) != list(features.feature_names(info.feature_set)):
        raise BundleError(f"bundle features {info.features} are not the {info.feature_set!r} set of this spec")
    folder = Path(folder)
    stamped = {**asdict(info), "created": info.created or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    with atomic.staged_dir(folder) as tmp:
        tmp.mkdir(parents=True)
        booster.save_model(tmp / MODEL_FILE)
        (tmp / BUNDLE_FILE).write_text(json.dumps(stamped, indent=2))
    return folder


def load_bundle(folder: str | Path) -> tuple[BundleInfo, xgb.Booster]:
    """Read a bundle and check that it was made for this code's feature spec."""
    folder = Path(folder)
    meta, model = folder / BUNDLE_FILE, folder / MODEL_FILE
    if not meta.exists() or not model.exists():
        raise BundleError(
            f"{folder}: not a serving bundle (needs {BUNDLE_FILE} and {MODEL_FILE}); "
            "run 05_evaluate to export one, or point --model at its folder"
        )
    info = BundleInfo(**json.loads(meta.read_text()))
    if info.feature_spec_version != features.FEATURE_SPEC_VERSION:
        raise BundleError(
            f"{folder}: bundle was trained with feature spec {info.feature_spec_version}, this code computes "
            f"{features.FEATURE_SPEC_VERSION}; retrain (run_pipeline.py --from 02_preprocess) or check out the "
            "code that trained it"
        )
    booster = xgb.Booster(model_file=str(model))
    booster.set_param({"nthread": 1})  # per-request predictions: no thread-pool start-up per call
    return info, booster


def download_registered_bundle(tracking_uri: str, model_name: str, alias: str, dest: str | Path) -> Path:
    """Fetch the bundle of ``models:/<model_name>@<alias>`` from MLflow into ``dest``."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    try:
        version = client.get_model_version_by_alias(model_name, alias)
    except MlflowException as exc:
        raise BundleError(
            f"no model {model_name!r} with alias {alias!r} in MLflow at {tracking_uri}; run the pipeline "
            "through 05_evaluate first, or pass a bundle folder"
        ) from exc
    dest = Path(dest)
    artifact = bundle_artifact_path(version.version)
    with tempfile.TemporaryDirectory() as download, atomic.staged_dir(dest) as tmp:
        try:  # stores differ in where below dst_path the files land; the returned path is the truth
            fetched = Path(client.download_artifacts(version.run_id, artifact, download))
        except MlflowException as exc:
            raise BundleError(
                f"{model_name} v{version.version} (alias {alias!r}) has no serving bundle at {artifact} of run "
                f"{version.run_id}; was it registered by 05_evaluate? ({exc})"
            ) from exc
        shutil.copytree(fetched, tmp)
    return dest


def bundle_folder(model: str, tracking_uri: str, registered_model: str, cache_root: Path) -> Path:
    """A bundle folder for ``model``: a registry alias (``champion``, ``challenger``) is downloaded, a path is used."""
    if model in ("champion", "challenger"):
        return download_registered_bundle(
            tracking_uri, registered_model, model, cache_root / f"{registered_model}-{model}"
        )
    return Path(model)


class Scorer:
    """Scores raw transactions (column arrays or dicts) with one bundle."""

    def __init__(self, info: BundleInfo, booster: xgb.Booster) -> None:
        self.info = info
        self.booster = booster

    @classmethod
    def from_folder(cls, folder: str | Path) -> "Scorer":
        return cls(*load_bundle(folder))

    def probabilities(self, columns: dict[str, np.ndarray]) -> np.ndarray:
        matrix = features.compute(columns, self.info.feature_set).astype(np.float32)
        return self.booster.inplace_predict(matrix)

    def score_columns(self, columns: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """(fraud_probability float64, is_fraud bool) for raw column arrays."""
        probability = self.probabilities(columns).astype(np.float64)
        return probability, probability >= self.info.threshold

    def score_records(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Validated raw transactions (dicts) -> one result per transaction, in order."""
        probability, decision = self.score_columns(features.columns_from_records(records))
        return [
            {
                "transaction_id": record.get("transaction_id"),
                "fraud_probability": float(p),
                "is_fraud": bool(d),
                "threshold": self.info.threshold,
                "model_name": self.info.model_name,
                "model_version": self.info.model_version,
            }
            for record, p, d in zip(records, probability, decision, strict=True)
        ]


def _columns(batch) -> dict[str, np.ndarray]:
    return {name: batch.column(name).to_numpy(zero_copy_only=False) for name in batch.schema.names}


def score_file(scorer: Scorer, source: str, output: str | Path) -> dict:
    """Score a PaySim CSV/Parquet file batch by batch into a CSV (written atomically).

    The output keeps the identifying columns, adds ``fraud_probability`` and ``is_fraud``, and the
    file's labels when it has them; the summary includes AUPRC when labels are present.
    """
    import pyarrow as pa
    import pyarrow.csv as pacsv

    from lib.acquire import read_batches

    output = Path(output)
    if output.suffix.lower() != ".csv":
        raise ParameterError(f"--output {output}: scores are written as CSV; give a path ending in .csv")
    keep = ["step", "type", "amount", "nameOrig", "nameDest"]
    labels, probabilities, rows = [], [], 0
    tmp = output.with_name(f".{output.name}.tmp")
    try:
        writer = None
        for batch in read_batches(source, required=features.INPUT_COLUMNS):
            probability, decision = scorer.score_columns(_columns(batch))
            out = {name: batch.column(name) for name in keep}
            out["fraud_probability"] = pa.array(probability)
            out["is_fraud"] = pa.array(decision.astype(np.int8))
            if "isFraud" in batch.schema.names:
                out["isFraud"] = batch.column("isFraud")
                labels.append(batch.column("isFraud").to_numpy())
                probabilities.append(probability)
            table = pa.table(out)
            if writer is None:
                writer = pacsv.CSVWriter(tmp, table.schema, write_options=pacsv.WriteOptions(quoting_style="none"))
            writer.write_table(table)
            rows += len(batch)
        if writer is None:
            raise ParameterError(f"{source}: no rows to score")
        writer.close()
        output.parent.mkdir(parents=True, exist_ok=True)
        tmp.replace(output)
    finally:
        tmp.unlink(missing_ok=True)
    summary: dict[str, Any] = {"rows": rows, "output": str(output), "model": scorer.info.model_name}
    summary["model_version"] = scorer.info.model_version
    if labels:
        from sklearn.metrics import average_precision_score

        y, p = np.concatenate(labels), np.concatenate(probabilities)
        summary["frauds"] = int(y.sum())
        summary["auprc"] = float(average_precision_score(y, p)) if 0 < y.sum() < len(y) else None
    return summary
