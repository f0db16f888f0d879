"""GitHub Actions workflows, checked offline: actionlint is clean, every command they run exists here."""

import os
import re
import shutil
import subprocess

import pytest
import yaml

from lib.config import PROJECT_ROOT

WORKFLOWS = sorted((PROJECT_ROOT / ".github" / "workflows").glob("*.yml"))


def actionlint() -> str:
    found = shutil.which("actionlint", path=f"{PROJECT_ROOT / '.venv' / 'bin'}:{os.environ.get('PATH', '')}")
    if not found:
        message = "actionlint not installed: run `make tools` (needs Go)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return found


def load(path):
    return yaml.safe_load(path.read_text())


def run_lines():
    for path in WORKFLOWS:
        for job in load(path)["jobs"].values():
            for step in job["steps"]:
                for line in step.get("run", "").splitlines():
                    yield path.name, line.strip()


def test_there_are_ci_cd_and_training_workflows():
    assert {p.name for p in WORKFLOWS} == {"ci.yml", "cd.yml", "train.yml"}


def test_actionlint_is_clean():
    done = subprocess.run([actionlint(), "-color=false", *map(str, WORKFLOWS)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_make_target_and_script_the_workflows_run_exists():
    makefile = (PROJECT_ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([A-Za-z][\w-]*):", makefile, re.MULTILINE))
    for workflow, line in run_lines():
        for target in re.findall(r"\bmake ([a-z][\w-]*)", line):
            assert target in targets, f"{workflow}: `{line}` needs make target {target}"
        for script in re.findall(r"(?:bash |^)(\.\./)?((?:scripts|\.ci)/[\w./-]+)", line):
            assert (PROJECT_ROOT / script[1]).exists(), f"{workflow}: `{line}` runs missing {script[1]}"
    assert (PROJECT_ROOT / "scripts" / "smoke_test.sh").exists()


def test_actions_are_pinned_and_permissions_are_least_privilege():
    for path in WORKFLOWS:
        workflow = load(path)
        assert "permissions" in workflow, f"{path.name}: no top-level permissions"
        for name, job in workflow["jobs"].items():
            for step in job["steps"]:
                if "uses" in step:
                    assert re.search(r"@(v\d+\.\d+\.\d+|[0-9a-f]{40})$", step["uses"]), f"{path.name}: {step['uses']}"
            wants_token = job.get("permissions", {}).get("id-token") == "write"
            assert wants_token == (path.name == "cd.yml" and name == "deploy"), f"{path.name}/{name}: id-token"
    deploy = load(PROJECT_ROOT / ".github" / "workflows" / "cd.yml")["jobs"]["deploy"]
    assert deploy["environment"] == "production"
    assert any("configure-aws-credentials" in s.get("uses", "") for s in deploy["steps"])
    assert not any("aws-access-key-id" in str(s.get("with", {})) for s in deploy["steps"])  # OIDC, no stored keys
