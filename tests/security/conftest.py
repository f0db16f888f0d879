"""The probes of the second hardening pass (issue 32), kept as tests: hostile Arrow bodies, a broken or
tampered bundle store, a label flood, a lying scorer. The apps' fixtures are the serving tests'."""

from tests.serving.conftest import api, transactions  # noqa: F401 (fixtures)
from tests.stream.conftest import topics, window  # noqa: F401 (fixtures)
