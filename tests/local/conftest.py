"""The ops room's tests share the Lambda package fixtures with the serving tests."""

from tests.serving.conftest import lambda_dev, lambda_packages, transactions  # noqa: F401 (fixtures)
