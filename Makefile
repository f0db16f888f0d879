# Two commands for a newcomer: `make run` (pipeline on the embedded default) and `make test`.
PYTHON ?= python3.11
PROFILE ?= default
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

ACTIONLINT_VERSION := v1.7.12

.PHONY: setup tools k8s-tools feast-env run run-full test test-fast validate-manifests lab lint format lock clean

setup: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	@scripts/check_java.sh
	@scripts/check_disk.sh
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; install Python 3.11 or run 'make PYTHON=/path/to/python3.11'" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet "$$(grep -m1 '^pip==' requirements.lock | cut -d' ' -f1)"  # the locked pip, not the newest
	$(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $(STAMP)

# Go tools the tests use (needs Go; the Go module proxy serves them): actionlint for .github/workflows.
tools: $(BIN)/actionlint

$(BIN)/actionlint: | $(STAMP)
	GOBIN=$(abspath $(BIN)) go install github.com/rhysd/actionlint/cmd/actionlint@$(ACTIONLINT_VERSION)

# The development cluster's programs (python -m lib k8s-local): Kubernetes, etcd, metrics-server, CoreDNS, built from the
# Go module proxy into ~/.cache/fraud-mlops/k8s/<version>/bin (about 15 minutes cold on 2 cores, then nothing).
k8s-tools: setup
	$(BIN)/python -c "from lib.local.k8s_build import ensure_binaries; ensure_binaries()"

# Feast in its own environment, only for benchmarks/feast_vs_direct.py (feast pins redis < 8).
feast-env: .venv-feast/.installed

.venv-feast/.installed: benchmarks/requirements-feast.lock
	$(PYTHON) -m venv .venv-feast
	.venv-feast/bin/python -m pip install --quiet -r benchmarks/requirements-feast.lock
	touch $@

run: setup
	$(BIN)/python run_pipeline.py --profile $(PROFILE)

run-full: setup
	$(BIN)/python run_pipeline.py --profile full

test: setup
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: setup
	$(BIN)/python -m pytest -m "not slow" tests

validate-manifests: setup
	$(BIN)/python -m pytest tests/serving/test_k8s.py

lab: setup
	$(BIN)/jupyter lab --notebook-dir=.

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: setup
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

lock:
	$(BIN)/python -m pip install --quiet uv
	$(BIN)/uv pip compile requirements.in --python-version 3.11 --python-platform x86_64-unknown-linux-gnu \
		--no-header --annotation-style line -o requirements.lock
	$(BIN)/uv pip compile benchmarks/requirements-feast.in --python-version 3.11 --python-platform x86_64-unknown-linux-gnu \
		--no-header --annotation-style line -o benchmarks/requirements-feast.lock

clean:
	rm -rf $(VENV) .venv-feast runs/2* runs/latest runs/.cache mlflow.db mlartifacts data/raw data/processed data/*.dvc dvc-remote
