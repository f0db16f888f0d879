"""The architecture as a test: which part of ``lib`` may import which, and a scoring path free of heavy libraries."""

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from lib.config import PROJECT_ROOT

CORE = "core"
# part -> the parts it may import (lib/*.py at the top level is the core; lib/__main__.py belongs to the CLI).
# The ops room (local: service starters, the Lambda packager) imports only the core; the scoring path
# (serving, stream) never imports it nor the CLI; only the CLI imports the CLI.
ALLOWED = {
    CORE: {CORE},
    "local": {CORE, "local"},
    "data": {CORE, "data"},
    "serving": {CORE, "serving"},
    "stream": {CORE, "serving", "stream"},
    "model": {CORE, "data", "serving", "model"},
    "monitoring": {CORE, "local", "data", "serving", "stream", "monitoring"},
    "pipeline": {CORE, "local", "data", "serving", "stream", "model", "monitoring", "pipeline"},
    "cli": {CORE, "local", "data", "serving", "stream", "model", "monitoring", "pipeline", "cli"},
}
LIGHT = ("serving", "stream")  # what the Lambda package, the API image and the stream scorer carry
HEAVY = ("pyspark", "mlflow", "tensorflow", "keras", "pandas", "evidently", "sklearn")


def part_of(module: str) -> str:
    """``lib.serving.api`` and ``lib.serving`` -> ``serving``; ``lib.config`` -> core; ``lib.__main__`` -> cli."""
    names = module.split(".")
    if names[:2] == ["lib", "__main__"]:
        return "cli"
    return names[1] if len(names) > 1 and names[1] in ALLOWED else CORE


def module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> list[tuple[int, str]]:
    """Every module ``path`` imports, at module level or inside functions: (line, dotted name)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
            if node.module == "lib":  # from lib import atomic, features: core modules by name
                found += [(node.lineno, f"lib.{alias.name}") for alias in node.names]
    return found


def violations(root: Path) -> list[str]:
    """Imports in ``root/lib`` that break ``ALLOWED`` or bring a heavy library into a light part."""
    problems = []
    for path in sorted((root / "lib").rglob("*.py")):
        module = module_name(path, root)
        part = part_of(module)
        for line, name in imports(path):
            where = f"{path.relative_to(root)}:{line}"
            if name.startswith("lib.") and (target := part_of(name)) not in ALLOWED[part]:
                problems.append(f"{where}: {part} imports {name} ({target}); {part} may import {sorted(ALLOWED[part])}")
            if part in LIGHT and name.split(".")[0] in HEAVY:
                problems.append(f"{where}: {part} imports {name}; the scoring path stays free of {', '.join(HEAVY)}")
    return problems


def test_lib_follows_the_allowed_import_directions():
    assert violations(PROJECT_ROOT) == []


def test_the_chalice_app_imports_only_the_core_and_serving():
    app = PROJECT_ROOT / "chalice_app" / "app.py"
    wrong = [
        (line, name)
        for line, name in imports(app)
        if name.startswith("lib.") and part_of(name) not in ("core", "serving")
    ]
    assert wrong == []


def test_the_check_catches_a_forbidden_import(tmp_path):
    """The checker itself: a core module importing a subpackage, serving importing the pipeline, the ops room
    or pandas, the stream importing the CLI, the ops room importing a pipeline room."""
    for room in ("serving", "stream", "local"):
        (tmp_path / "lib" / room).mkdir(parents=True)
    (tmp_path / "lib" / "config.py").write_text("from lib.data import acquire\n")
    (tmp_path / "lib" / "serving" / "api.py").write_text(
        textwrap.dedent("""
            from lib import features
            def route():
                from lib.pipeline import runner
                from lib.local import daemons
                import pandas as pd
        """)
    )
    (tmp_path / "lib" / "stream" / "scorer.py").write_text("from lib.cli import stream\n")
    (tmp_path / "lib" / "local" / "kafka.py").write_text(
        "from lib.config import Settings\nfrom lib.stream import kafka\n"
    )
    problems = violations(tmp_path)
    assert len(problems) == 6, problems
    assert any("lib/config.py:1: core imports lib.data (data)" in p for p in problems)
    assert any("serving imports lib.pipeline (pipeline)" in p for p in problems)
    assert any("serving imports lib.local (local)" in p for p in problems)
    assert any("serving imports pandas" in p for p in problems)
    assert any("stream imports lib.cli (cli)" in p for p in problems)
    assert any("lib/local/kafka.py:2: local imports lib.stream (stream)" in p for p in problems)


def test_no_import_cycle_between_lib_modules():
    graph = {}
    for path in (PROJECT_ROOT / "lib").rglob("*.py"):
        module = module_name(path, PROJECT_ROOT)
        graph[module] = {name for _, name in imports(path) if name.startswith("lib.") and name != module}
    modules = set(graph)

    def visit(node, trail):
        if node in trail:
            return [*trail[trail.index(node) :], node]
        for target in graph.get(node, ()):
            if target in modules and (cycle := visit(target, [*trail, node])):
                return cycle
        return None

    for module in sorted(graph):
        cycle = visit(module, [])
        assert cycle is None, " -> ".join(cycle)


@pytest.mark.slow
def test_the_scoring_path_runs_without_the_heavy_libraries(bundle, tmp_path):
    """In a fresh interpreter where Spark, MLflow, TensorFlow, pandas, Evidently and scikit-learn cannot be
    imported (as in the Lambda package): the serving and stream modules and the Chalice app load, and a
    transaction is scored. (XGBoost imports pandas and scikit-learn when they are installed, so merely
    looking at ``sys.modules`` in this environment would prove nothing.)"""
    transaction = {"step": 1, "type": "TRANSFER", "amount": 181.0, "nameOrig": "C1305486145", "oldbalanceOrg": 181.0,
                   "newbalanceOrig": 0.0, "nameDest": "C553264065", "oldbalanceDest": 0.0, "newbalanceDest": 0.0}  # fmt: skip
    code = textwrap.dedent(f"""
        import importlib.abc, importlib.util, sys
        class Absent(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in {HEAVY!r}:
                    raise ModuleNotFoundError(f"No module named {{name!r}} (not in the scoring path)")
        sys.meta_path.insert(0, Absent())
        sys.path.insert(0, {str(PROJECT_ROOT)!r})
        for name in ("lib.serving.scoring", "lib.serving.api", "lib.serving.metrics", "lib.serving.auth",
                     "lib.serving.source", "lib.serving.remote", "lib.serving.server", "lib.stream.kafka",
                     "lib.stream.scorer", "lib.stream.metrics", "lib.contract", "lib.arrow_batch", "lib.features",
                     "lib.config"):
            __import__(name)
        spec = importlib.util.spec_from_file_location("app", {str(PROJECT_ROOT / "chalice_app" / "app.py")!r})
        spec.loader.exec_module(importlib.util.module_from_spec(spec))
        from lib.serving.scoring import Scorer
        result = Scorer.from_folder({str(bundle)!r}).score_records([{transaction!r}])[0]
        print(0 <= result.fraud_probability <= 1, sorted(m for m in sys.modules if m.split(".")[0] in {HEAVY!r}))
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "True []", done.stdout
