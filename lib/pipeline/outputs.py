"""What a notebook produced, recorded in its last cell for the runner, MLflow and the tests.

``record(...)`` displays the values under a dedicated MIME type, so they live inside the executed
notebook itself (like scrapbook's glue); ``read(notebook)`` collects them back. The reader of the
notebook sees the step's verdict (one or two sentences built from the values by a function of
``lib.pipeline.verdicts``) and the raw record once, folded.
"""

import html
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nbformat
import numpy as np

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


def record(conclude: Callable[[dict], str] | None = None, /, **values: Any) -> None:
    """Record named outputs of this notebook (numbers, strings, paths, lists, dicts).

    ``conclude(values)`` gives the verdict shown above the folded record; it is recorded too (``verdict``).
    """
    from IPython.display import display

    plain = _plain(values)
    if conclude is not None:
        plain["verdict"] = conclude(plain)
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


def headline_metrics(outputs: dict) -> dict[str, float]:
    """Top-level numeric outputs (for MLflow metrics and the run index)."""
    return {k: float(v) for k, v in outputs.items() if isinstance(v, int | float) and not isinstance(v, bool)}
