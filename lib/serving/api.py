"""The FastAPI twin of the Chalice app: the same routes and JSON contract, served by uvicorn on Kubernetes.

Routes are thin: validation is ``lib.contract``, scoring is ``lib.serving.scoring``. The model
(``lib.serving.source.resolve_model``) loads in a background thread at start-up, so ``/healthz``
answers at once and ``/readyz`` says 503 until the model is there. ``python -m lib serve`` runs it
for users.

Pointed at a bundle store (``lib.serving.bundles``), the app serves its champion, scores every
request with the challenger too when the store names one (the shadow result is logged, never
returned), and swaps in a new pair between requests when the aliases move: each request reads the
pair once, so none is scored by a half-loaded model or fails during a swap.
"""

import inspect
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import numpy as np
import orjson
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from fastapi_offline import FastAPIOffline
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lib import arrow_batch, contract
from lib.config import Settings, get_settings
from lib.errors import PipelineError, ServiceUnavailable
from lib.redact import redact
from lib.serving import scoring
from lib.serving.auth import key_matches
from lib.serving.metrics import ApiMetrics, multiprocess
from lib.serving.online import COLUMNS, OnlineFeatures
from lib.serving.scoring import Served
from lib.serving.source import ModelSource, resolve_model, watch

log = logging.getLogger("fraud.api")
API_KEY_HEADER = "X-API-Key"


class ModelHolder:
    """What the app serves: resolved in the background by ``resolve()`` (again every ``retry`` seconds while
    that fails, so a store that becomes valid is picked up) and then checked for newer versions as the source
    says; ``error`` says why nothing is served, ``source.failure`` why the newest version is not."""

    def __init__(
        self, resolve: Callable[[], ModelSource], metrics: ApiMetrics, source: ModelSource | None = None,
        retry: float = 5.0,
    ) -> None:  # fmt: skip
        self.resolve, self.metrics, self.retry = resolve, metrics, retry
        self.source, self.error = source, ""
        self._stopping = threading.Event()
        self._failure: str | None = None
        if source is not None:
            metrics.set_model(source.current.champion.info)

    @property
    def served(self) -> Served | None:
        return self.source.current if self.source is not None else None

    @property
    def failure(self) -> str | None:
        return self.source.failure if self.source is not None else None

    def load(self) -> None:
        while not self._stopping.is_set():
            try:
                source = self.resolve()
                break
            except Exception as exc:  # reported by /readyz; the process stays up for the probes, and tries again
                error = redact(f"{type(exc).__name__}: {exc}")
                if error != self.error:
                    log.error("model_load_failed", extra={"fields": {"error": error}})
                self.error = error
            if self._stopping.wait(self.retry):
                return
        self.source, self.error = source, ""
        self._swapped(source.current, "model_loaded")
        watch(source, self._checked, self._stopping)

    def _checked(self, swapped: bool) -> None:
        assert self.source is not None
        if swapped:
            self._swapped(self.source.current)
        failure = self.source.failure
        self.metrics.reload_checked(failure)
        if failure and failure != self._failure:
            champion = self.source.current.versions[0]
            log.error("model_reload_failed", extra={"fields": {"error": failure, "model_version": champion}})
        self._failure = failure

    def _swapped(self, served: Served, event: str = "model_swapped") -> None:
        self.metrics.set_model(served.champion.info)
        champion, challenger = served.versions
        log.info(event, extra={"fields": {"model_version": champion, "shadow_version": challenger}})

    def stop(self) -> None:
        self._stopping.set()

    def ready(self) -> Served:
        served = self.served
        if served is None:
            raise ServiceUnavailable(self.error or "model is loading")
        return served


SHADOW_SAMPLE = 20  # results a shadow log line lists; a batch's line says its counts (10,000 results were 838 KB)


def shadow(
    served: Served,
    records: list[dict[str, Any]] | None = None,
    columns: dict[str, Any] | None = None,
    ids: list[Any] | None = None,
) -> None:
    """Score ``records`` (or ``columns`` with their ``ids``) with the challenger, if one is served, and log
    what it decided (never returned): the counts, and the first ``SHADOW_SAMPLE`` results."""
    if served.challenger is None:
        return
    try:
        if records is not None:
            ids = [r.get("transaction_id") for r in records]
            results = served.challenger.score_records(records, "none")
            probability = np.array([r.fraud_probability for r in results])
            decision = np.array([r.is_fraud for r in results])
        else:
            probability, decision = served.challenger.score_columns(columns or {})
    except Exception as exc:  # the champion's answer stands whatever the shadow does
        log.error("shadow_failed", extra={"fields": {"error": redact(f"{type(exc).__name__}: {exc}")}})
        return
    sample = contract.predictions(served.challenger.info, (ids or [])[:SHADOW_SAMPLE], probability[:SHADOW_SAMPLE],
                                  decision[:SHADOW_SAMPLE])  # fmt: skip
    fields = {
        "model_version": served.challenger.info.model_version,
        "champion_version": served.champion.info.model_version,
        "transactions": len(probability),
        "alerts": int(np.count_nonzero(decision)),
        "results": [
            {"transaction_id": r.transaction_id, "fraud_probability": r.fraud_probability, "is_fraud": r.is_fraud}
            for r in sample
        ],
    }
    log.info("shadow", extra={"fields": fields})


def json_predictions(
    info: scoring.BundleInfo, ids: list[Any], probability: Any, decision: Any, reasons: contract.Explained
) -> bytes:
    """The batch route's JSON answer (``contract.BatchPrediction``)."""
    return contract.encode_json({"predictions": contract.predictions(info, ids, probability, decision, reasons)})


def arrow_predictions(
    info: scoring.BundleInfo, ids: list[Any], probability: Any, decision: Any, reasons: contract.Explained
) -> bytes:
    """The batch route's answer as an Arrow IPC stream: the JSON answer's fields as columns (the model's
    name and version dictionary-encoded: one value each; ``reasons`` a list of structs per row)."""
    import pyarrow as pa

    columns = contract.prediction_columns(info, ids, probability, decision)
    kinds = {"transaction_id": pa.string(), "fraud_probability": pa.float64(), "is_fraud": pa.bool_(),
             "threshold": pa.float64()}  # fmt: skip
    one_each = pa.array(np.zeros(len(ids), np.int8))  # every row's index into a dictionary of one value

    def column(name: str, values: list[Any]) -> Any:
        if name == "reasons":
            return arrow_batch.reasons_array(len(ids), reasons)
        if name in kinds:
            return pa.array(values, kinds[name])
        return pa.DictionaryArray.from_arrays(one_each, pa.array(values[:1], pa.string()))

    return arrow_batch.arrow_stream(pa.table({name: column(name, values) for name, values in columns.items()}))


def explain_asked(request: Request) -> scoring.Explain:
    """``?explain=true``: every decision of the request with its reasons; ``false``: none; absent: the alerts'."""
    return contract.parse_explain(request.query_params.get("explain"))


class RequestRoute(APIRoute):
    """A route whose endpoint takes the ``Request`` alone and answers a ``Response`` itself: FastAPI documents
    it from its declaration (OpenAPI, response model) as any route, and calls the endpoint directly instead
    of solving its parameters on every request (a custom route class, FastAPI's hook for this; the solving
    was about a third of the app's time for one transaction). Any other endpoint keeps FastAPI's handler."""

    def get_route_handler(self) -> Callable[[Request], Any]:
        annotations = [p.annotation for p in inspect.signature(self.endpoint).parameters.values()]
        return self.endpoint if annotations == [Request] else super().get_route_handler()


class JsonLogFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {"ts": round(record.created, 3), "level": record.levelname.lower(), "event": record.getMessage()}
        return orjson.dumps({**entry, **getattr(record, "fields", {})}).decode()


class ObservedMiddleware:
    """Pure ASGI middleware: request id, body-size limit, latency and count metrics, one JSON log line."""

    def __init__(self, app: ASGIApp, metrics: ApiMetrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        began = time.perf_counter()
        headers = dict(scope["headers"])
        request_id = headers.get(b"x-request-id", b"").decode("latin-1")[:64] or uuid.uuid4().hex
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode("latin-1"))]
            await send(message)

        try:
            length = int(headers.get(b"content-length", b"0") or 0)
        except ValueError:
            length = 0
        failure = None
        try:
            if length > contract.MAX_BODY_BYTES:
                response = JSONResponse(
                    {"detail": f"request body of {length:,} bytes exceeds the limit of {contract.MAX_BODY_BYTES:,}"},
                    413,
                )
                await response(scope, receive, send_with_id)
            else:
                await self.app(scope, receive, send_with_id)
        except Exception as exc:  # answered 500 by Starlette; counted and logged here first, so a 5xx alert fires
            failure = redact(f"{type(exc).__name__}: {exc}")
            raise
        finally:
            seconds = time.perf_counter() - began
            route = scope.get("route")
            path = getattr(route, "path", "unmatched")
            self.metrics.observe_request(path, scope["method"], str(status), seconds)
            entry = {"request_id": request_id, "method": scope["method"], "path": scope["path"], "route": path}
            fields = {**entry, "status": status, "duration_ms": round(seconds * 1000, 3)}
            (log.error if failure else log.info)(
                "request", extra={"fields": {**fields, **({"error": failure} if failure else {})}}
            )


def create_app(
    settings: Settings | None = None,
    source: ModelSource | None = None,
    registry: CollectorRegistry | None = None,
    resolve: Callable[[], ModelSource] | None = None,
) -> FastAPI:
    """The app. It serves a ``source`` handed in (a ``Scorer``: tests); otherwise what ``resolve()`` returns
    (default: ``resolve_model(settings.serving_model)``; ``python -m lib serve`` hands in one that can also
    fetch a registry alias from MLflow), loaded in the background and checked for newer versions."""
    settings = settings or get_settings()
    metrics = ApiMetrics(registry or CollectorRegistry(), shared=multiprocess())
    resolve = resolve or (lambda: resolve_model(settings.serving_model, settings))
    holder = ModelHolder(resolve, metrics, source, settings.serving_reload_interval)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if holder.served is None:
            threading.Thread(target=holder.load, name="bundle-loader", daemon=True).start()
        yield
        holder.stop()

    app = FastAPIOffline(  # /docs and /redoc with their own Swagger UI and ReDoc files: they work offline
        title="PaySim fraud scoring",
        version="1",
        description="Raw PaySim transactions in, fraud probability and decision out. Same contract as the Chalice app.",
        lifespan=lifespan,
        telemetry={"tracing": False, "metrics": False, "logs": False},  # Prometheus and JSON logs instead
    )
    app.state.holder = holder
    app.router.route_class = RequestRoute
    app.add_middleware(ObservedMiddleware, metrics=metrics)
    _map_errors(app)
    _add_routes(app, holder, metrics, settings.api_key_list(), OnlineFeatures.from_settings(settings))
    _add_contract_schemas(app)
    return app


def _map_errors(app: FastAPI) -> None:
    """Project errors (the contract's 400/413/422, no model: 503) as the JSON bodies both apps answer with."""

    @app.exception_handler(PipelineError)
    async def refused(_request: Request, exc: PipelineError) -> JSONResponse:
        return JSONResponse({"detail": getattr(exc, "detail", None) or redact(str(exc))}, exc.http_status)


async def read_body(request: Request, limit: int = contract.MAX_BODY_BYTES) -> bytes:
    """The request body, counted as it arrives: past ``limit`` bytes it stops reading and answers 413,
    whether the client sent a Content-Length or a chunked body."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise contract.RequestError(413, f"request body exceeds the limit of {limit:,} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


EXPLAIN_PARAMETER = {
    "name": "explain", "in": "query", "required": False, "schema": {"type": "boolean"},
    "description": "true: every decision with its reasons; false: none (absent: only alerts carry them)",
}  # fmt: skip
ARROW_BODY = {arrow_batch.ARROW_STREAM: {"schema": {"type": "string", "format": "binary"}}}


def _body(schema: str, extra: dict[str, Any], arrow: bool = False) -> dict[str, Any]:
    """OpenAPI for a JSON body validated by ``lib.contract`` (the route reads it itself, after the key),
    with ``extra`` (the security requirement); ``arrow``: the batch route also takes and answers an Arrow
    IPC stream of the same fields as columns."""
    content: dict[str, Any] = {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}}
    if arrow:
        content.update(ARROW_BODY)
    body = {"requestBody": {"required": True, "content": content}, "parameters": [EXPLAIN_PARAMETER]}
    return {"openapi_extra": {**extra, **body}}


def _add_contract_schemas(app: FastAPI) -> None:
    """Put the contract's request schemas (pydantic's own JSON schemas) into the app's OpenAPI components."""
    from pydantic import TypeAdapter

    base = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            spec = base()
            schemas = spec.setdefault("components", {}).setdefault("schemas", {})
            spec["components"].setdefault("securitySchemes", {})["APIKeyHeader"] = {
                "type": "apiKey", "in": "header", "name": API_KEY_HEADER,
            }  # fmt: skip
            for name, kind in (("Transaction", contract.Transaction), ("BatchRequest", contract.BatchRequest)):
                schema = TypeAdapter(kind).json_schema(ref_template="#/components/schemas/{model}")
                schemas.update(schema.pop("$defs", {}))
                schemas[name] = schema
        return app.openapi_schema or {}

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented way to extend its schema


def _add_routes(
    app: FastAPI, holder: ModelHolder, metrics: ApiMetrics, keys: list[str], online: OnlineFeatures | None
) -> None:
    def ready(request: Request) -> Served:
        """The key first, then the model (read once per request: a swap never splits one); the body is
        read only after both. Inline, not FastAPI dependencies: resolving those cost a third of a request."""
        if not key_matches(request.headers.get(API_KEY_HEADER) or "", keys):
            raise HTTPException(401, "missing or invalid API key", headers={"WWW-Authenticate": API_KEY_HEADER})
        return holder.ready()

    # documented as FastAPI documents a Security(APIKeyHeader) dependency; enforced by ready()
    secured: dict[str, Any] = {"security": [{"APIKeyHeader": []}]}
    guarded: dict[str, Any] = {"responses": {400: {}, 401: {}, 413: {}, 422: {}, 503: {}}}

    def respond(body: object) -> Response:
        return Response(contract.encode_json(body), media_type="application/json")

    @app.post("/v1/predict", response_model=contract.Prediction, **_body("Transaction", secured), **guarded)
    async def predict(request: Request) -> Response:  # tens of microseconds: no thread hop
        served = ready(request)
        explain = explain_asked(request)
        records = [contract.parse_transaction(await read_body(request))]
        if online is not None:  # one round trip (two when it records)
            record = records[0]
            await metrics.astored(online.aserve, {c: [record[c]] for c in COLUMNS}, [record.get("transaction_id")])
        result = served.champion.score_records(records, explain)
        metrics.observe_results(result)
        shadow(served, records)
        return respond(result[0])

    arrow_answer = {200: {"content": ARROW_BODY, "description": "the predictions (Arrow for an Arrow body)"}}
    batch = {**guarded, "responses": {**guarded["responses"], **arrow_answer}}

    @app.post("/v1/predict/batch", response_model=contract.BatchPrediction, **_body("BatchRequest", secured, arrow=True),
              **batch)  # fmt: skip
    async def predict_batch(request: Request) -> Response:
        served = ready(request)
        explain = explain_asked(request)
        body = await read_body(request)
        arrow = request.headers.get("content-type", "").split(";")[0].strip() == arrow_batch.ARROW_STREAM
        columns, ids = (arrow_batch.parse_arrow_batch if arrow else contract.parse_batch)(body)
        if online is not None:  # one pipelined round trip per step of the batch (two when it records)
            await metrics.astored(online.aserve, columns, ids)
        probability, decision, reasons = served.champion.assess(columns, explain)
        metrics.observe(probability, decision, reasons)
        shadow(served, columns=columns, ids=ids)
        answer, media = (
            (arrow_predictions, arrow_batch.ARROW_STREAM) if arrow else (json_predictions, "application/json")
        )
        return Response(answer(served.champion.info, ids, probability, decision, reasons), media_type=media)

    @app.get("/v1/model", response_model=scoring.BundleInfo, openapi_extra=secured, **guarded)
    def model(request: Request) -> Response:
        return respond(ready(request).champion.info)

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", responses={503: {}})
    def readyz() -> JSONResponse:
        """Ready or not, and why not, without addresses (it is open to anyone who can reach the pod)."""
        served = holder.served
        if served is None:
            reason = redact(holder.error, drop_urls=True) if holder.error else "the model is loading"
            return JSONResponse({"status": "failed" if holder.error else "loading", "reason": reason}, 503)
        champion, challenger = served.versions
        shadowed = {"shadow_version": challenger} if challenger else {}  # only a bundle store has a challenger
        # still ready (it serves), but a new version it was asked to serve could not be loaded: say so, and why
        failing = {"reload_failed": redact(holder.failure, drop_urls=True)} if holder.failure else {}
        return JSONResponse({"status": "ready", "model_version": champion, **shadowed, **failing})

    @app.get("/metrics", include_in_schema=False)
    def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)


def worker_app() -> FastAPI:
    """One worker of ``serve --workers N`` (uvicorn calls this in each process): the app for the folder the
    command resolved (``FRAUD_SERVING_MODEL``), with its JSON log lines and its share of the metrics."""
    configure_logging()
    return create_app(get_settings())


def configure_logging(level: str = "INFO") -> None:
    """One JSON line per event on stderr. The records skip what the lines never show (caller, thread and
    process names: the logging documentation's "Optimization" settings), a tenth of a request's cost."""
    logging._srcfile = None
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    handler = logging.StreamHandler()
    handler.setFormatter(JsonLogFormatter())
    log.handlers[:] = [handler]
    log.setLevel(level)
    log.propagate = False
