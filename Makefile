# Two commands for a newcomer: `make run` (pipeline on the embedded default) and `make test`.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup run run-full test test-fast lab lint format lock clean

setup: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	@scripts/check_java.sh
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; install Python 3.11 or run 'make PYTHON=/path/to/python3.11'" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $(STAMP)

run: setup
	$(BIN)/python run_pipeline.py

run-full: setup
	$(BIN)/python run_pipeline.py --profile full

test: setup
	$(BIN)/python -m pytest

test-fast: setup
	$(BIN)/python -m pytest -m "not slow" tests

lab: setup
	$(BIN)/jupyter lab --notebook-dir=.

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

lock:
	$(BIN)/python -m pip install --quiet uv
	$(BIN)/uv pip compile requirements.in --python-version 3.11 --python-platform x86_64-unknown-linux-gnu \
		--no-header --annotation-style line -o requirements.lock

clean:
	rm -rf $(VENV) runs/2* runs/latest runs/.cache mlflow.db mlartifacts data/raw data/processed data/*.dvc dvc-remote
