"""The FastAPI twin of the Chalice app: the same routes and JSON contract, served by uvicorn on Kubernetes.

Routes are thin: validation is ``lib.contract``, scoring is ``lib.scoring``. The bundle loads in a
background thread at start-up, so ``/healthz`` answers at once and ``/readyz`` says 503 until the
model is there. ``python -m lib serve`` runs it for users.

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
from collections.abc import Callable
from contextlib import asynccontextmanager
from pathlib import Path

import numpy as np
import orjson
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from fastapi_offline import FastAPIOffline
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from lib import contract
from lib.config import Settings, get_settings
from lib.errors import PipelineError, ServiceUnavailable
from lib.redact import redact
from lib.serving import scoring
from lib.serving.auth import key_matches
from lib.serving.bundles import BundleStore, LiveModels, Served
from lib.serving.metrics import ApiMetrics, multiprocess

log = logging.getLogger("fraud.api")
API_KEY_HEADER = "X-API-Key"


class ModelHolder:
    """What the app serves, loaded once in the background from ``locate()`` (a bundle folder, or a
    bundle store, whose aliases are then watched); ``error`` says why it is not there."""

    def __init__(
        self, locate: Callable[[], Path], metrics: ApiMetrics, scorer: scoring.Scorer | None = None,
        reload_interval: float = 5.0,
    ) -> None:  # fmt: skip
        self.locate, self.metrics, self.reload_interval = locate, metrics, reload_interval
        self.models: LiveModels | None = None
        self.fixed, self.error = (Served(scorer) if scorer is not None else None), None
        if scorer is not None:
            metrics.set_model(scorer.info)

    @property
    def served(self) -> Served | None:
        return self.models.current if self.models is not None else self.fixed

    def load(self) -> None:
        try:
            folder = self.locate()
            if BundleStore.holds(folder):
                self.models = LiveModels(BundleStore(folder), self.reload_interval, on_swap=self._swapped)
                self.models.watch()
            else:
                self.fixed = Served(scoring.Scorer.from_folder(folder))
            self._swapped(self.served, "model_loaded")
        except Exception as exc:  # reported by /readyz; the process stays up for the probes
            self.error = redact(f"{type(exc).__name__}: {exc}")
            log.error("model_load_failed", extra={"fields": {"error": self.error}})

    def _swapped(self, served: Served, event: str = "model_swapped") -> None:
        self.metrics.set_model(served.champion.info)
        champion, challenger = served.versions
        log.info(event, extra={"fields": {"model_version": champion, "shadow_version": challenger}})

    def ready(self) -> Served:
        served = self.served
        if served is None:
            raise ServiceUnavailable(self.error or "model is loading")
        return served


def shadow(
    served: Served, records: list[dict] | None = None, columns: dict | None = None, ids: list | None = None
) -> None:
    """Score ``records`` (or ``columns`` with their ``ids``) with the challenger, if one is served, and log
    its results (never returned)."""
    if served.challenger is None:
        return
    try:
        if records is not None:
            results = served.challenger.score_records(records)
            ids, probability, decision = (
                [r[k] for r in results] for k in ("transaction_id", "fraud_probability", "is_fraud")
            )
        else:
            probability, decision = (a.tolist() for a in served.challenger.score_columns(columns))
    except Exception as exc:  # the champion's answer stands whatever the shadow does
        log.error("shadow_failed", extra={"fields": {"error": redact(f"{type(exc).__name__}: {exc}")}})
        return
    fields = {
        "model_version": served.challenger.info.model_version,
        "champion_version": served.champion.info.model_version,
        "results": [
            {"transaction_id": i, "fraud_probability": p, "is_fraud": d}
            for i, p, d in zip(ids, probability, decision, strict=True)
        ],
    }
    log.info("shadow", extra={"fields": fields})


def json_predictions(info: scoring.BundleInfo, ids: list, probability, decision) -> bytes:
    """The batch route's JSON answer (``contract.BatchPrediction``), the ``Scorer.results`` of ``ids``
    built as ``contract.PredictionRecord`` structs."""
    record, threshold, name, version = contract.PredictionRecord, info.threshold, info.model_name, info.model_version
    return contract.encode_json({"predictions": [
        record(i, p, d, threshold, name, version)
        for i, p, d in zip(ids, probability.tolist(), decision.tolist(), strict=True)
    ]})  # fmt: skip


def arrow_predictions(info: scoring.BundleInfo, ids: list, probability, decision) -> bytes:
    """The batch route's answer as an Arrow IPC stream: the JSON answer's fields as columns."""
    import pyarrow as pa

    n = len(ids)

    def constant(value, kind):
        return pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, np.int8)), pa.array([value], kind))

    table = pa.table({
        "transaction_id": pa.array(ids, pa.string()),
        "fraud_probability": pa.array(probability, pa.float64()),
        "is_fraud": pa.array(decision, pa.bool_()),
        "threshold": pa.array(np.full(n, info.threshold), pa.float64()),
        "model_name": constant(info.model_name, pa.string()),
        "model_version": constant(info.model_version, pa.string()),
    })  # fmt: skip
    return contract.arrow_stream(table)


class RequestRoute(APIRoute):
    """A route whose endpoint takes the ``Request`` alone and answers a ``Response`` itself: FastAPI documents
    it from its declaration (OpenAPI, response model) as any route, and calls the endpoint directly instead
    of solving its parameters on every request (a custom route class, FastAPI's hook for this; the solving
    was about a third of the app's time for one transaction). Any other endpoint keeps FastAPI's handler."""

    def get_route_handler(self):
        annotations = [p.annotation for p in inspect.signature(self.endpoint).parameters.values()]
        return self.endpoint if annotations == [Request] else super().get_route_handler()


class JsonLogFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {"ts": round(record.created, 3), "level": record.levelname.lower(), "event": record.getMessage()}
        return orjson.dumps({**entry, **getattr(record, "fields", {})}).decode()


class ObservedMiddleware:
    """Pure ASGI middleware: request id, body-size limit, latency and count metrics, one JSON log line."""

    def __init__(self, app, metrics: ApiMetrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        began = time.perf_counter()
        headers = dict(scope["headers"])
        request_id = headers.get(b"x-request-id", b"").decode("latin-1")[:64] or uuid.uuid4().hex
        status = 500

        async def send_with_id(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode("latin-1"))]
            await send(message)

        try:
            length = int(headers.get(b"content-length", b"0") or 0)
        except ValueError:
            length = 0
        if length > contract.MAX_BODY_BYTES:
            response = JSONResponse(
                {"detail": f"request body of {length:,} bytes exceeds the limit of {contract.MAX_BODY_BYTES:,}"}, 413
            )
            await response(scope, receive, send_with_id)
        else:
            await self.app(scope, receive, send_with_id)
        seconds = time.perf_counter() - began
        route = scope.get("route")
        path = getattr(route, "path", "unmatched")
        self.metrics.observe_request(path, scope["method"], str(status), seconds)
        entry = {"request_id": request_id, "method": scope["method"], "path": scope["path"], "route": path}
        log.info("request", extra={"fields": {**entry, "status": status, "duration_ms": round(seconds * 1000, 3)}})


def create_app(
    settings: Settings | None = None,
    scorer: scoring.Scorer | None = None,
    registry: CollectorRegistry | None = None,
    locate: Callable[[], Path] | None = None,
    reload_interval: float = 5.0,
) -> FastAPI:
    """The app. It serves a ``scorer`` handed in as is; otherwise it loads the bundle ``locate()`` returns
    (default: the folder ``settings.serving_model``; ``python -m lib serve`` hands in a registry lookup),
    or, when that is a bundle store, its champion and challenger, checking its aliases every
    ``reload_interval`` seconds."""
    settings = settings or get_settings()
    metrics = ApiMetrics(registry or CollectorRegistry(), shared=multiprocess())
    locate = locate or (lambda: scoring.bundle_path(settings.serving_model))
    holder = ModelHolder(locate, metrics, scorer, reload_interval)

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        if holder.served is None:
            threading.Thread(target=holder.load, name="bundle-loader", daemon=True).start()
        yield

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
    _add_routes(app, holder, metrics, settings.api_key_list())
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


ARROW_BODY = {contract.ARROW_STREAM: {"schema": {"type": "string", "format": "binary"}}}


def _body(schema: str, extra: dict, arrow: bool = False) -> dict:
    """OpenAPI for a JSON body validated by ``lib.contract`` (the route reads it itself, after the key),
    with ``extra`` (the security requirement); ``arrow``: the batch route also takes and answers an Arrow
    IPC stream of the same fields as columns."""
    content = {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}}
    if arrow:
        content.update(ARROW_BODY)
    return {"openapi_extra": {**extra, "requestBody": {"required": True, "content": content}}}


def _add_contract_schemas(app: FastAPI) -> None:
    """Put the contract's request schemas (pydantic's own JSON schemas) into the app's OpenAPI components."""
    from pydantic import TypeAdapter

    base = app.openapi

    def openapi() -> dict:
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
        return app.openapi_schema

    app.openapi = openapi


def _add_routes(app: FastAPI, holder: ModelHolder, metrics: ApiMetrics, keys: list[str]) -> None:
    def ready(request: Request) -> Served:
        """The key first, then the model (read once per request: a swap never splits one); the body is
        read only after both. Inline, not FastAPI dependencies: resolving those cost a third of a request."""
        if not key_matches(request.headers.get(API_KEY_HEADER) or "", keys):
            raise HTTPException(401, "missing or invalid API key", headers={"WWW-Authenticate": API_KEY_HEADER})
        return holder.ready()

    # documented as FastAPI documents a Security(APIKeyHeader) dependency; enforced by ready()
    secured = {"security": [{"APIKeyHeader": []}]}
    guarded = {"responses": {400: {}, 401: {}, 413: {}, 422: {}, 503: {}}}

    def respond(body: object) -> Response:
        return Response(orjson.dumps(body), media_type="application/json")

    @app.post("/v1/predict", response_model=contract.Prediction, **_body("Transaction", secured), **guarded)
    async def predict(request: Request) -> Response:  # tens of microseconds: no thread hop
        served = ready(request)
        records = [contract.parse_transaction(await read_body(request))]
        result = served.champion.score_records(records)
        metrics.observe_results(result)
        shadow(served, records)
        return respond(result[0])

    arrow_answer = {200: {"content": ARROW_BODY, "description": "the predictions (Arrow for an Arrow body)"}}
    batch = {**guarded, "responses": {**guarded["responses"], **arrow_answer}}

    @app.post("/v1/predict/batch", response_model=contract.BatchPrediction, **_body("BatchRequest", secured, arrow=True),
              **batch)  # fmt: skip
    async def predict_batch(request: Request) -> Response:
        served = ready(request)
        body = await read_body(request)
        arrow = request.headers.get("content-type", "").split(";")[0].strip() == contract.ARROW_STREAM
        columns, ids = (contract.parse_arrow_batch if arrow else contract.parse_batch)(body)
        probability, decision = served.champion.score_columns(columns)
        metrics.observe(probability, decision)
        shadow(served, columns=columns, ids=ids)
        if arrow:
            return Response(
                arrow_predictions(served.champion.info, ids, probability, decision), media_type=contract.ARROW_STREAM
            )
        return Response(
            json_predictions(served.champion.info, ids, probability, decision), media_type="application/json"
        )

    @app.get("/v1/model", response_model=scoring.BundleInfo, openapi_extra=secured, **guarded)
    def model(request: Request) -> Response:
        return respond(ready(request).champion.info.__dict__)

    @app.get("/healthz")
    def healthz() -> dict:
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
        return JSONResponse({"status": "ready", "model_version": champion, **shadowed})

    @app.get("/metrics", include_in_schema=False)
    def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)


def worker_app() -> FastAPI:
    """One worker of ``serve --workers N`` (uvicorn calls this in each process): the app for the folder the
    command resolved (``FRAUD_SERVING_MODEL``), with its JSON log lines and its share of the metrics."""
    configure_logging()
    settings = get_settings()
    return create_app(settings, reload_interval=settings.serving_reload_interval)


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
