"""AWS Lambda (Chalice) app: the routes and JSON contract of the FastAPI twin, over the same scoring core.

Handlers are thin: ``lib.contract`` validates, ``lib.serving.scoring`` scores. ``lib`` reaches the
deployment package through ``vendor/lib``, which ``python -m lib.local.shipping lambda vendor/lib``
fills with exactly the modules this app imports (Chalice copies ``vendor/`` into the package root;
``lambda-package`` does it for you). The model is what ``FRAUD_SERVING_MODEL`` names
(``lib.serving.source``), folders relative to this file; the stages in ``.chalice/config.json`` name
``bundle`` (copy ``data/bundle`` to ``vendor/bundle`` before ``chalice package``/``deploy``; Chalice puts
it at the package root).
"""

import json
import logging
import time
from pathlib import Path

from chalice import AuthResponse, AuthRoute, Chalice, Response
from chalice.app import Request

from lib import contract
from lib.config import Settings, comma_list
from lib.errors import PipelineError
from lib.redact import redact
from lib.serving.auth import key_matches
from lib.serving.online import COLUMNS, OnlineFeatures
from lib.serving.scoring import Explain, Model
from lib.serving.source import resolve_model

app = Chalice(app_name="paysim-fraud-scoring")
app.log.setLevel(logging.INFO)
HERE = Path(__file__).resolve().parent
_cache: dict = {}


def get_settings() -> Settings:
    """The project's settings from this function's environment (the stage's ``environment_variables``)."""
    if "settings" not in _cache:
        _cache["settings"] = Settings()
    return _cache["settings"]


def get_scorer() -> Model:
    """Loaded on first use and kept for warm invocations: ``FRAUD_SERVING_MODEL``, relative to this app."""
    if "source" not in _cache:
        _cache["source"] = resolve_model(get_settings().serving_model, get_settings(), base=HERE, shadow=False)
    return _cache["source"].current.champion


def get_online() -> OnlineFeatures | None:
    """The online feature store when ``FRAUD_REDIS_URL`` is set (ElastiCache in the function's VPC): each
    request's entity features read from it (unreachable: 503), recorded too with ``FRAUD_STORE_RECORD``."""
    if "online" not in _cache:
        _cache["online"] = OnlineFeatures.from_settings(get_settings())
    return _cache["online"]


def get_api_keys() -> list[str]:
    """Keys from ``FRAUD_API_KEYS``, or from the SSM parameter ``FRAUD_API_KEYS_SSM_PARAMETER`` names (deployed).

    SSM keys are read again after ``FRAUD_API_KEYS_TTL_SECONDS`` (default 300), so a revoked key stops
    working within that time on every warm container, not only after a cold start.
    """
    settings = get_settings()
    fetched = _cache.get("keys_fetched", float("-inf"))
    if "keys" not in _cache or (
        settings.api_keys_ssm_parameter and time.monotonic() - fetched > settings.api_keys_ttl_seconds
    ):
        raw = settings.api_keys
        if settings.api_keys_ssm_parameter:
            import boto3

            parameter = boto3.client("ssm").get_parameter(Name=settings.api_keys_ssm_parameter, WithDecryption=True)
            raw = parameter["Parameter"]["Value"]
        _cache["keys"], _cache["keys_fetched"] = comma_list(raw), time.monotonic()
    return _cache["keys"]


PROTECTED_ROUTES = ["/v1/predict", "/v1/predict/batch", "/v1/model"]


@app.authorizer(name="api_key_authorizer", header="X-API-Key", ttl_seconds=300)
def api_key_authorizer(auth_request):
    """API Gateway's Lambda (TOKEN) authorizer for the prod stage: the same keys, checked before the
    scoring Lambda runs. A missing header never reaches it (API Gateway answers 401); a wrong key
    raises ``Unauthorized``, which API Gateway also turns into 401 without any detail."""
    if key_matches(auth_request.token or "", get_api_keys()):
        return AuthResponse(routes=list[str | AuthRoute](PROTECTED_ROUTES), principal_id="api-key")
    raise Exception("Unauthorized")  # the exact message API Gateway maps to 401


# FRAUD_LAMBDA_AUTHORIZER=1 at `chalice deploy/package` time (the prod stage in cd.yml) puts the
# authorizer in front of the protected routes. `chalice local` cannot run it (it only passes the
# Authorization header to authorizers), so dev keeps the in-handler check alone; prod has both.
PROTECTED = {"authorizer": api_key_authorizer} if get_settings().lambda_authorizer else {}


def _json(body: object, status: int = 200) -> Response:
    return Response(
        contract.encode_json(body).decode(), status_code=status, headers={"Content-Type": "application/json"}
    )


def _log(route: str, status: int, began: float, **fields) -> None:
    """One JSON line per request; CloudWatch metric filters read these fields (see README)."""
    request_id = getattr(app.lambda_context, "aws_request_id", None) if app.lambda_context else None
    entry = {
        "event": "request",
        "route": route,
        "status": status,
        "duration_ms": round((time.perf_counter() - began) * 1000, 3),
    }
    app.log.info(json.dumps({**entry, "request_id": request_id, **fields}))


def _request() -> Request:
    """The request being handled (Chalice sets it before a route runs)."""
    request = app.current_request
    if request is None:
        raise RuntimeError("no current request: a route's handler runs only inside a request")
    return request


def _body() -> bytes:
    raw = _request().raw_body or b""
    return raw.encode() if isinstance(raw, str) else raw


def _explain() -> Explain:
    """``?explain=true``: every decision of the request with its reasons; ``false``: none; absent: the alerts'."""
    asked = _request().query_params
    return contract.parse_explain(asked.get("explain") if asked else None)


def _guarded(route: str, handler) -> Response:
    """API key check, contract errors as 4xx, and the request log line, around one handler."""
    began = time.perf_counter()
    if not key_matches(_request().headers.get("x-api-key") or "", get_api_keys()):
        _log(route, 401, began)
        return _json({"detail": "missing or invalid API key"}, 401)
    try:
        body, fields = handler()
    except PipelineError as exc:  # contract errors (4xx), no bundle (503): each carries its status
        _log(route, exc.http_status, began)
        return _json({"detail": getattr(exc, "detail", str(exc))}, exc.http_status)
    _log(route, 200, began, **fields)
    return _json(body)


def _logged(results: list) -> dict:
    """What the request's log line says about its results."""
    frauds = sum(r.is_fraud for r in results)
    return {"transactions": len(results), "frauds": frauds, "model_version": results[0].model_version}


@app.route("/v1/predict", methods=["POST"], content_types=["application/json"], **PROTECTED)
def predict() -> Response:
    def handle():
        explain = _explain()
        record, online = contract.parse_transaction(_body()), get_online()
        if online is not None:  # one round trip (two when it records)
            online.serve({c: [record[c]] for c in COLUMNS}, [record.get("transaction_id")])
        results = get_scorer().score_records([record], explain)
        return results[0], _logged(results)

    return _guarded("/v1/predict", handle)


@app.route("/v1/predict/batch", methods=["POST"], content_types=["application/json"], **PROTECTED)
def predict_batch() -> Response:
    def handle():
        explain = _explain()
        columns, ids = contract.parse_batch(_body())
        online = get_online()
        if online is not None:  # one pipelined round trip per step of the batch (two when it records)
            online.serve(columns, ids)
        results = get_scorer().score_batch(columns, ids, explain)
        return {"predictions": results}, _logged(results)

    return _guarded("/v1/predict/batch", handle)


@app.route("/v1/model", methods=["GET"], **PROTECTED)
def model() -> Response:
    return _guarded("/v1/model", lambda: (get_scorer().info, {}))


@app.route("/healthz", methods=["GET"])
def healthz() -> dict:
    return {"status": "ok"}


@app.route("/readyz", methods=["GET"])
def readyz() -> Response:
    """Ready or not, and why not, without addresses or credentials (it is open to anyone)."""
    try:
        info = get_scorer().info
    except PipelineError as exc:  # no bundle, a broken one, a setting it cannot use
        return _json({"status": "failed", "reason": redact(exc, drop_urls=True)}, 503)
    return _json({"status": "ready", "model_version": info.model_version})
