"""Schemathesis against the FastAPI twin's own OpenAPI spec: no 5xx, every response as documented."""

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from lib.config import Settings
from lib.serving import scoring
from lib.serving.api import create_app
from tests.serving.conftest import KEY

pytestmark = pytest.mark.slow


def test_no_server_errors_and_responses_match_the_spec(bundle):
    app = create_app(Settings(api_keys=KEY), source=scoring.Scorer.from_folder(bundle))
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.label for op in operations} >= {"POST /v1/predict", "POST /v1/predict/batch", "GET /v1/model"}
    for operation in operations:  # a bounded run: derandomized, a fixed number of examples per route

        @given(case=operation.as_strategy())
        @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
        def fuzz(case):
            case.call_and_validate(headers={"X-API-Key": KEY})

        fuzz()
