"""Every pipeline notebook runs as committed, top to bottom, as in JupyterLab: nbval, in a copy of the checkout.

nbval executes a notebook in the checkout it lives in, and the notebooks write ``data/``; run here,
in a copy, they write the copy's ``data/``, never the user's. Their defaults are the default profile.
"""

import re
import subprocess
import sys

import nbformat
import pytest

from lib.pipeline.runner import discover
from tests.conftest import copy_project, project_env

pytestmark = pytest.mark.slow


def test_every_notebook_runs_as_committed(tmp_path):
    project = copy_project(tmp_path / "project")
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "--nbval-lax", "-p", "no:cacheprovider", "-q", "notebooks"],
        cwd=project, env=project_env(project), capture_output=True, text=True, timeout=1800,
    )  # fmt: skip
    # nbval collects one item per code cell: every cell of every notebook ran and passed
    cells = sum(
        1
        for path in discover(project / "notebooks")
        for cell in nbformat.read(path, 4).cells
        if cell.cell_type == "code"
    )
    summary = done.stdout.splitlines()[-1]
    assert done.returncode == 0 and re.match(rf"^{cells} passed\b", summary), done.stdout[-5000:] + done.stderr
