"""``stream score --via-http``: the stream scorer's micro-batches scored through the FastAPI twin's batch route."""

from lib.contract import ARROW_STREAM, MAX_BATCH, arrow_stream
from lib.features import INPUT_COLUMNS
from lib.stream.kafka import StreamError


class HttpScorer:
    """``--via-http``: score each micro-batch through the API's batch route instead of in-process, as an
    Arrow IPC stream both ways (a few microseconds per transaction less than JSON on each side)."""

    COLUMNS = ("transaction_id", *INPUT_COLUMNS)

    def __init__(self, url: str, api_key: str, timeout: float = 30.0) -> None:
        import httpx
        import pyarrow as pa

        text = ("transaction_id", "type", "nameOrig", "nameDest")
        kinds = {"step": pa.int64(), **dict.fromkeys(text, pa.string())}
        self.schema = pa.schema([(c, kinds.get(c, pa.float64())) for c in self.COLUMNS])
        self.url = url.rstrip("/") + "/v1/predict/batch"
        headers = {"X-API-Key": api_key, "Content-Type": ARROW_STREAM, "Accept": ARROW_STREAM}
        self.client = httpx.Client(headers=headers, timeout=timeout)

    def score_batch(self, columns: dict, ids: list) -> list[dict]:
        import pyarrow as pa

        table = pa.table({"transaction_id": ids, **columns}, schema=self.schema)
        results = []
        for start in range(0, len(ids), MAX_BATCH):
            response = self.client.post(self.url, content=arrow_stream(table.slice(start, MAX_BATCH)))
            if response.status_code != 200:
                raise StreamError(f"{self.url} answered {response.status_code}: {response.text[:300]}")
            results.extend(pa.ipc.open_stream(response.content).read_all().to_pylist())
        return results
