"""What ships: the Lambda zip and the API image carry the scoring path's modules, and no module of the ops,
CLI, pipeline, model, data or monitoring rooms (``lib.local.shipping``)."""

import re
import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest

from lib.config import PROJECT_ROOT
from lib.local import shipping
from tests.conftest import copy_project


def never_shipped(files: list[Path]) -> list[str]:
    """The files of ``files`` that belong to a room that never ships."""
    return [str(f) for f in files if f.parts[1].removesuffix(".py") in shipping.NEVER_SHIPPED]


@pytest.mark.parametrize("target", sorted(shipping.ENTRIES))
def test_what_ships_is_the_scoring_path_and_nothing_of_the_other_rooms(target):
    files = shipping.shipped(target)
    assert never_shipped(files) == []
    expected = {"lib/__init__.py", "lib/contract.py", "lib/features.py", "lib/serving/scoring.py"}
    assert expected <= {str(f) for f in files}, files


def test_the_check_catches_a_shipped_module_importing_another_room(tmp_path, monkeypatch):
    """A mutant: the scoring core importing the ops room inside a function pulls it into the closure."""
    for name in ("lib/__init__.py", "lib/local/__init__.py", "lib/local/daemons.py"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("")
    (tmp_path / "lib" / "serving").mkdir()
    (tmp_path / "lib" / "serving" / "__init__.py").write_text("")
    (tmp_path / "app.py").write_text("from lib.serving import scoring\n")
    (tmp_path / "lib" / "serving" / "scoring.py").write_text(
        textwrap.dedent("""
            def score():
                from lib.local import daemons
        """)
    )
    monkeypatch.setattr(shipping, "PROJECT_ROOT", tmp_path)
    files = [f.relative_to(tmp_path) for f in shipping.closure(tmp_path / "app.py")]
    assert never_shipped(files) == ["lib/local/__init__.py", "lib/local/daemons.py"]


def test_the_image_copies_exactly_what_it_imports():
    """``k8s/Dockerfile``'s COPY lines of ``lib`` give the closure of ``python -m lib.serving``, file for file."""
    dockerfile = (PROJECT_ROOT / "k8s" / "Dockerfile").read_text().replace("\\\n", " ")
    copied: set[str] = set()
    for line in re.findall(r"^COPY (?!--from)(.+)$", dockerfile, re.M):
        *sources, _dest = line.split()
        for source in (s for s in sources if s.startswith("lib")):
            path = PROJECT_ROOT / source
            found = path.rglob("*.py") if path.is_dir() else [path]
            copied |= {str(p.relative_to(PROJECT_ROOT)) for p in found if "__pycache__" not in p.parts}
    assert copied == {str(f) for f in shipping.shipped("image")}
    assert 'CMD ["python", "-m", "lib.serving"' in dockerfile


def test_the_lambda_vendor_folder_holds_exactly_what_the_app_imports(tmp_path):
    vendor = shipping.copy_shipped("lambda", tmp_path / "vendor" / "lib")
    written = sorted(f"lib/{p.relative_to(vendor)}" for p in vendor.rglob("*") if p.is_file())
    assert written == [str(f) for f in shipping.shipped("lambda")]
    assert not (PROJECT_ROOT / "chalice_app" / "vendor" / "lib").is_symlink()  # no whole-lib link left


def test_the_documented_vendor_command_runs_on_a_bare_python(tmp_path):
    """chalice_app/README.md's deploy recipe (and cd.yml): ``PYTHONPATH=.. python -m lib.local.shipping lambda
    vendor/lib`` from chalice_app/, with the system's Python and none of the project's packages."""
    readme = (PROJECT_ROOT / "chalice_app" / "README.md").read_text()
    assert "PYTHONPATH=.. python -m lib.local.shipping lambda vendor/lib" in readme
    project = copy_project(tmp_path / "project")
    python = shutil.which("python3", path="/usr/bin:/bin")
    done = subprocess.run(
        [python, "-S", "-m", "lib.local.shipping", "lambda", "vendor/lib"], cwd=project / "chalice_app",
        env={"PYTHONPATH": "..", "PATH": "/usr/bin:/bin"}, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    vendored = sorted(f"lib/{p.relative_to(project / 'chalice_app' / 'vendor' / 'lib')}"
                      for p in (project / "chalice_app" / "vendor" / "lib").rglob("*.py"))  # fmt: skip
    assert vendored == [str(f) for f in shipping.shipped("lambda")]
