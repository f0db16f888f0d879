"""Batch scoring of files: ``python -m lib score`` reads PaySim CSV/Parquet and writes scores as CSV."""

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from lib import atomic, features
from lib.data.acquire import read_batches
from lib.data.validate import ValidationSummary, validate_batches
from lib.errors import ParameterError
from lib.quality import average_precision
from lib.serving.scoring import Model

KEPT = ("step", "type", "amount", "nameOrig", "nameDest")


def _columns(batch: pa.RecordBatch) -> dict[str, np.ndarray]:
    return {name: batch.column(name).to_numpy(zero_copy_only=False) for name in batch.schema.names}


def score_file(scorer: Model, source: str, output: str | Path, reasons: bool = False) -> dict[str, Any]:
    """Score a PaySim CSV/Parquet file batch by batch into a CSV, written atomically.

    Every value is checked with the file contract (``lib.data.validate``, the bounds the APIs use too);
    a bad value stops the command with the column, the row and the value, and no output. The output
    keeps the identifying columns, adds ``fraud_probability`` and ``is_fraud``, and the file's labels
    when it has them, and with ``reasons`` each alert's reason codes (``contract.Reason``), strongest first,
    ``;``-separated (empty for the others); the summary includes AUPRC when labels are present. It is renamed into place
    only once everything, the summary included, has succeeded.
    """
    output = Path(output)
    if output.suffix.lower() != ".csv":
        raise ParameterError(f"--output {output}: scores are written as CSV; give a path ending in .csv")
    labels, probabilities = [], []
    checked = ValidationSummary()
    try:
        with atomic.staged_file(output) as tmp:
            writer = None
            for batch in validate_batches(read_batches(source, required=features.INPUT_COLUMNS), source, checked):
                probability, decision, explained = scorer.assess(_columns(batch), "alerts" if reasons else "none")
                out = {name: batch.column(name) for name in KEPT}
                out["fraud_probability"] = pa.array(probability)
                out["is_fraud"] = pa.array(decision.astype(np.int8))
                if reasons:
                    codes = [";".join(r["code"] for r in explained.get(row, ())) for row in range(len(probability))]
                    out["reasons"] = pa.array(codes, pa.string())
                if "isFraud" in batch.schema.names:
                    out["isFraud"] = batch.column("isFraud")
                    labels.append(batch.column("isFraud").to_numpy())
                    probabilities.append(probability)
                table = pa.table(out)
                if writer is None:
                    writer = pacsv.CSVWriter(tmp, table.schema, write_options=pacsv.WriteOptions(quoting_style="none"))
                writer.write_table(table)
            if writer is not None:
                writer.close()
            summary = _summary(scorer, checked.rows, output, labels, probabilities)
    except OSError as exc:
        raise ParameterError(
            f"--output {output}: cannot be written ({exc.strerror or exc}); choose a writable path"
        ) from exc
    return summary


def _summary(scorer: Model, rows: int, output: Path, labels: list, probabilities: list) -> dict[str, Any]:
    summary: dict[str, Any] = {"rows": rows, "output": str(output), "model": scorer.info.model_name}
    summary["model_version"] = scorer.info.model_version
    if labels:
        y, p = np.concatenate(labels), np.concatenate(probabilities)
        summary["frauds"] = int(y.sum())
        summary["auprc"] = average_precision(y, p) if 0 < y.sum() < len(y) else None
    return summary
