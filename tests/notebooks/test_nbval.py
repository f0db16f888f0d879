"""Every pipeline notebook runs as committed, top to bottom, as in JupyterLab: nbval, in a copy of the checkout.

nbval executes a notebook in the checkout it lives in, and the notebooks write ``data/``; run here,
in a copy, they write the copy's ``data/``, never the user's. Their defaults are the default profile.
"""

import subprocess
import sys

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
    count = len(discover(project / "notebooks"))
    assert done.returncode == 0 and f"{count} passed" in done.stdout.splitlines()[-1], done.stdout[-5000:] + done.stderr
