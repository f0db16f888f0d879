"""A model behind an API: ``stream score --model http://…`` scores each micro-batch through the FastAPI twin's
batch route instead of in process, as an Arrow IPC stream both ways (a few microseconds per transaction
less than JSON on each side). It names the model the API serves (``/v1/model``), asked again whenever an
answer names another version and every ``reload_interval`` seconds."""

from typing import Any

import numpy as np

from lib import contract
from lib.arrow_batch import ARROW_STREAM, arrow_schema, arrow_stream
from lib.contract import MAX_BATCH
from lib.errors import ServiceUnavailable
from lib.serving.scoring import BundleInfo, Explain, Served


class HttpScorer:
    """The API at ``url`` as a ``lib.serving.scoring.Model`` and a model source (``current``, ``check``)."""

    def __init__(self, url: str, api_key: str, timeout: float = 30.0, reload_interval: float = 5.0) -> None:
        import httpx

        self.base = url.rstrip("/")
        self.reload_interval: float | None = reload_interval
        self.failure: str | None = None
        self.schema = arrow_schema()
        headers = {"X-API-Key": api_key}
        self.client = httpx.Client(headers=headers, timeout=timeout)
        self.info = self._model()
        self.current = Served(self)

    def _model(self) -> BundleInfo:
        response = self.client.get(f"{self.base}/v1/model")
        if response.status_code != 200:
            raise ServiceUnavailable(f"{self.base}/v1/model answered {response.status_code}: {response.text[:300]}")
        return BundleInfo(**response.json())

    def check(self) -> bool:
        """Ask the API which model it serves now; True when that changed. Never raises: an API that does not
        answer is ``failure`` (its batch route's answers name their version all the same)."""
        try:
            info = self._model()
        except Exception as exc:
            self.failure = f"{type(exc).__name__}: {exc}"
            return False
        changed, self.info, self.failure = info.model_version != self.info.model_version, info, None
        return changed

    def _answer(self, columns: dict[str, Any], ids: list[Any], explain: Explain) -> dict[str, list[Any]]:
        """The API's answers to ``ids`` (column arrays as ``features.columns_from_records`` gives), as columns; the
        API gives an alert its reasons, ``explain`` passes on as the route's ``?explain``."""
        import pyarrow as pa

        table = pa.table({"transaction_id": ids, **columns}, schema=self.schema)
        answers: dict[str, list[Any]] = {name: [] for name in contract.Prediction.model_fields}
        asked = {"alerts": "", "all": "?explain=true", "none": "?explain=false"}[explain]
        route = f"{self.base}/v1/predict/batch{asked}"
        for start in range(0, len(ids), MAX_BATCH):
            response = self.client.post(
                route, content=arrow_stream(table.slice(start, MAX_BATCH)),
                headers={"Content-Type": ARROW_STREAM, "Accept": ARROW_STREAM},
            )  # fmt: skip
            if response.status_code != 200:
                raise ServiceUnavailable(f"{self.base} answered {response.status_code}: {response.text[:300]}")
            answered = pa.ipc.open_stream(response.content).read_all()
            for name, values in answers.items():
                values.extend(answered.column(name).to_pylist())
        if any(version != self.info.model_version for version in answers["model_version"]):
            self.check()  # the API swapped models: name the one it serves now
        return answers

    def score_batch(self, columns: dict[str, Any], ids: list[Any], explain: Explain = "alerts") -> list[Any]:
        return contract.prediction_records(self._answer(columns, ids, explain))

    def assess(
        self, columns: dict[str, Any], explain: Explain = "alerts"
    ) -> tuple[np.ndarray, np.ndarray, contract.Explained]:
        answers = self._answer(columns, [None] * len(columns["step"]), explain)
        reasons = {row: given for row, given in enumerate(answers["reasons"]) if given}
        return np.array(answers["fraud_probability"], np.float64), np.array(answers["is_fraud"], bool), reasons

    def score_columns(self, columns: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        probability, decision, _ = self.assess(columns, "none")
        return probability, decision

    def score_records(self, records: list[dict[str, Any]], explain: Explain = "alerts") -> list[Any]:
        from lib.features import columns_from_records

        return self.score_batch(columns_from_records(records), [r.get("transaction_id") for r in records], explain)
