"""The environment: every required package imports, one lock pins pip and conda alike, Java 17+, ruff clean."""

import importlib
import os
import re
import subprocess
import sys

import pytest
import yaml

from lib.config import PROJECT_ROOT

REQUIRED = {  # distribution name -> import name
    "jupyterlab": "jupyterlab",
    "papermill": "papermill",
    "nbconvert": "nbconvert",
    "pyspark": "pyspark",
    "xgboost": "xgboost",
    "tensorflow": "tensorflow",
    "mlflow": "mlflow",
    "dvc": "dvc",
    "evidently": "evidently",
    "nbval": "nbval",
    "chalice": "chalice",
    "fastapi": "fastapi",
    "uvicorn": "uvicorn",
    "prometheus-client": "prometheus_client",
    "kafka-python": "kafka",
    "pytest": "pytest",
    "pandera": "pandera",
    "pydantic-settings": "pydantic_settings",
}


def lock_pins() -> dict[str, str]:
    pins = {}
    for line in (PROJECT_ROOT / "requirements.lock").read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_.\-\[\]]+)==([^\s;#]+)", line)
        if match:
            pins[re.sub(r"[-_.]+", "-", match.group(1)).lower()] = match.group(2)
    return pins


@pytest.mark.slow
def test_every_required_package_imports_in_a_fresh_interpreter():
    code = "; ".join(f"import {module}" for module in REQUIRED.values())
    # evidently with pandas 3 fails at import: a fresh process proves this set imports together
    subprocess.run([sys.executable, "-c", code + "; from evidently import Report"], check=True, timeout=300)


def test_required_packages_are_pinned_and_installed_at_the_pinned_version():
    from importlib.metadata import version

    pins = lock_pins()
    for dist in REQUIRED:
        assert dist in pins, f"{dist} is not pinned in requirements.lock"
        assert version(dist) == pins[dist], f"{dist} installed {version(dist)} but locked {pins[dist]}; run make setup"
    assert pins["pandas"].startswith("2."), "pandas 3 breaks evidently's import; keep pandas 2.x"


def test_every_lock_line_is_an_exact_pin():
    lines = [
        ln for ln in (PROJECT_ROOT / "requirements.lock").read_text().splitlines() if ln and not ln.startswith("#")
    ]
    assert len(lines) == len(lock_pins()) > 100


def test_environment_yml_uses_the_same_lock():
    env = yaml.safe_load((PROJECT_ROOT / "environment.yml").read_text())
    deps = env["dependencies"]
    assert "python=3.11" in deps
    pip_section = next(d["pip"] for d in deps if isinstance(d, dict) and "pip" in d)
    assert "-r requirements.lock" in pip_section
    # nothing else in environment.yml may pin a Python package differently from the lock
    pins = lock_pins()
    for entry in [d for d in deps if isinstance(d, str)] + pip_section:
        match = re.match(r"^([A-Za-z0-9_.\-]+)\s*==?\s*([\w.]+)$", entry)
        if match and match.group(1) not in ("python", "openjdk"):
            name = re.sub(r"[-_.]+", "-", match.group(1)).lower()
            assert pins.get(name) == match.group(2), f"environment.yml pins {entry}, lock has {pins.get(name)}"


def test_python_version_matches_the_project():
    assert sys.version_info[:2] == (3, 11)


def test_java_check_passes_here_and_explains_the_fix(tmp_path):
    out = subprocess.run([PROJECT_ROOT / "scripts" / "check_java.sh"], capture_output=True, text=True)
    assert out.returncode == 0 and re.search(r"Java (\d+) OK", out.stdout)
    assert int(re.search(r"Java (\d+) OK", out.stdout).group(1)) >= 17
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "java").write_text("#!/bin/sh\necho 'openjdk version \"11.0.2\" 2019-01-15' >&2\n")
    (fake / "java").chmod(0o755)
    old = subprocess.run(
        [PROJECT_ROOT / "scripts" / "check_java.sh"],
        capture_output=True,
        text=True,
        env={"PATH": f"{fake}:/usr/bin:/bin"},
    )
    assert old.returncode == 1 and "Java 11" in old.stderr and "17+" in old.stderr


def test_disk_check_passes_here_and_names_the_shortfall():
    script = PROJECT_ROOT / "scripts" / "check_disk.sh"
    out = subprocess.run([script], capture_output=True, text=True)
    assert out.returncode == 0 and "disk OK" in out.stdout
    short = subprocess.run([script], capture_output=True, text=True, env={**os.environ, "NEED_GB": "100000000"})
    assert short.returncode == 1 and "MB free" in short.stderr and "100000000 GB" in short.stderr


def test_ruff_is_clean():
    for args in (["check", "."], ["format", "--check", "."]):
        out = subprocess.run([sys.executable, "-m", "ruff", *args], cwd=PROJECT_ROOT, capture_output=True, text=True)
        assert out.returncode == 0, out.stdout + out.stderr


def test_mypy_is_clean():
    """``make lint``'s type check (pyproject.toml: strict on the scoring path, the contract and the features)."""
    out = subprocess.run([sys.executable, "-m", "mypy"], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr


def test_lib_modules_stay_small_and_named_for_what_they_serve():
    for path in (PROJECT_ROOT / "lib").rglob("*.py"):
        assert path.stem not in ("utils", "helpers", "shared_functions", "common"), path
        assert len(path.read_text().splitlines()) < 450, f"{path} is getting long; split it by concept"
    importlib.import_module("lib.__main__")
