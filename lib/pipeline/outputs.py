"""What a notebook produced, recorded in its last cell for the runner, MLflow and the tests.

``record(...)`` displays the values under a dedicated MIME type, so they live inside the executed
notebook itself (like scrapbook's glue); ``read(notebook)`` collects them back. A pipeline step
records its typed record (``lib.pipeline.records``); the reader of the notebook sees the step's
verdict (``lib.pipeline.verdicts``) and the raw record once, folded. Any other notebook the runner
executes may record plain values by name.
"""

import dataclasses
import html
import json
import math
from pathlib import Path
from typing import Any

import nbformat
import numpy as np

from lib.pipeline import formats, records, verdicts
from lib.pipeline.records import StepRecord
from lib.units import Unit

MIME_TYPE = "application/vnd.fraud-pipeline.outputs+json"


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    raise TypeError(f"cannot record {type(value).__name__} value {value!r}; record numbers, strings, lists or dicts")


def record(step: StepRecord | None = None, /, **values: Any) -> None:
    """Record this notebook's outputs: a pipeline step's typed record, with its verdict (also recorded, as
    ``verdict``), or named plain values (numbers, strings, paths, lists, dicts)."""
    from IPython.display import display

    if step is not None:
        if values:
            raise TypeError("record a step's record or named values, not both")
        values = {**dataclasses.asdict(step), "verdict": verdicts.of(step)}
    plain = _plain(values)
    verdict = plain.get("verdict", "")
    folded = (
        f"<details><summary>Recorded outputs ({len(plain)} values; also in the run's outputs.json)</summary>"
        f"<pre>{html.escape(json.dumps(plain, indent=1))}</pre></details>"
    )
    page = (f'<p class="fraud-verdict"><strong>{html.escape(verdict)}</strong></p>' if verdict else "") + folded
    display({MIME_TYPE: plain, "text/html": page, "text/plain": verdict or json.dumps(plain, indent=1)}, raw=True)


def read(notebook: str | Path | nbformat.NotebookNode) -> dict:
    """Everything a (executed) notebook recorded, later records winning."""
    nb = notebook if isinstance(notebook, nbformat.NotebookNode) else nbformat.read(str(notebook), as_version=4)
    found: dict = {}
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            if MIME_TYPE in data:
                found.update(data[MIME_TYPE])
    return found


def figures(name: str, outputs: dict) -> dict[str, tuple[float, Unit]]:
    """A notebook's recorded numbers with their units (for MLflow metrics and the run page): a pipeline step's
    from its typed record, nested ones flattened (``candidates.xgboost_full.validation_auprc``); another
    notebook's top-level numbers, unit undeclared; none for a notebook that recorded nothing (it failed)."""
    if not outputs:
        return {}
    step = records.load(name, outputs)
    if step is not None:
        return formats.numbers(step)
    return {
        k: (float(v), Unit.TEXT) for k, v in outputs.items() if isinstance(v, int | float) and not isinstance(v, bool)
    }
