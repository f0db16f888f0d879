"""The training image (issue 35): k8s/README.md's "The training image" run as written: ``k8s-image --train`` builds
``k8s/Dockerfile.train`` from git's file list, then the pipeline runs in a container, all seven notebooks of the
default profile, and its run folder is copied out: its data has the hash this machine makes from the same parameters. In an image store of the test's own (the user's images and
containers stay alone), so the stand-in base is made there too."""

import json
import os
import shutil
import subprocess

import pytest
import yaml

from lib.config import PROJECT_ROOT
from lib.data import acquire
from lib.local import images
from tests.local.test_k8s import recipe

pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]


def test_the_training_image_runs_the_pipeline(tmp_path):
    lacking = [p for p in ("podman", "debootstrap") if not shutil.which(p)] + ([] if os.geteuid() == 0 else ["root"])
    if lacking:
        (pytest.fail if os.environ.get("CI") else pytest.skip)(f"needs {lacking}")
    storage = tmp_path / "storage.conf"
    storage.write_text(
        f'[storage]\ndriver = "overlay"\ngraphroot = "{tmp_path / "images"}"\nrunroot = "{tmp_path / "run"}"\n'
    )
    _, engine_env = images.engine()  # this machine's engine settings (runc; rlimits it can set)
    env = {**engine_env, "CONTAINERS_STORAGE_CONF": str(storage),
           "PATH": f"{PROJECT_ROOT / '.venv' / 'bin'}:{os.environ['PATH']}"}  # fmt: skip
    work = tmp_path / "work"
    work.mkdir()
    try:
        done = subprocess.run(["bash", "-c", "set -euxo pipefail\n" + "\n".join(recipe("### The training image"))], cwd=work, env=env,
                              capture_output=True, text=True, timeout=2100)  # fmt: skip
        assert done.returncode == 0, (done.stdout[-3000:], done.stderr[-4000:])
        assert "docker.io/library/paysim-fraud-train:dev built" in done.stdout
        finished = [line for line in done.stdout.splitlines() if line.startswith("Pipeline run ")]
        assert finished and finished[-1].endswith("/index.html"), done.stdout[-3000:]
        run = (work / "image-runs" / "latest").resolve()
        executed = sorted(p.stem for p in run.glob("*.ipynb"))
        assert executed == sorted(p.stem for p in (PROJECT_ROOT / "notebooks").glob("0*.ipynb")), executed
        assert (run / "index.html").exists()
        made = json.loads((run / "outputs.json").read_text())["01_acquire"]["raw_sha256"]
        default = yaml.safe_load((PROJECT_ROOT / "params" / "default.yaml").read_text())
        here = acquire.acquire(default["SOURCE"], tmp_path / "raw.parquet", default["ROWS"], default["SEED"],
                               default["SAMPLE_SIZE"])  # fmt: skip
        assert made == here.raw_sha256  # reproducible: the same parameters and seed give the same data in the image
    finally:
        for command in (["rm", "-f", "train"], ["rmi", "-a", "-f"]):  # the test's own store (6 GB): emptied
            subprocess.run(["podman", *command], env=env, capture_output=True, check=False, timeout=600)
        shutil.rmtree(tmp_path / "images", ignore_errors=True)
