"""DVC versions of the pipeline's data: track, push to a local or S3 remote, restore by run id or git rev.

DVC is driven through its command line (the stable interface), in the project's git repository.
The remote is configured per run in ``.dvc/config.local`` (never committed): a local directory by
default, or ``s3://bucket/prefix`` with an optional endpoint URL for S3-compatible stores;
credentials come from the standard AWS environment variables.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

from lib import atomic
from lib.config import PROJECT_ROOT
from lib.errors import PipelineError

REMOTE_NAME = "pipeline"
DEFAULT_REMOTE = "dvc-remote"  # a local directory remote in the project (git-ignored)


class VersioningError(PipelineError):
    """DVC could not track, push or restore data."""


def _dvc(root: Path, *args: str, remote: str | None = None) -> str:
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "dvc", *args], cwd=root, env=env, capture_output=True, text=True, timeout=3600
    )
    if done.returncode:
        detail = (done.stderr or done.stdout).strip().splitlines()
        message = "\n".join(line for line in detail if line.strip() and not line.startswith("Having any troubles"))
        raise VersioningError(f"`dvc {' '.join(args)}` failed{_remote_hint(remote)}:\n{message}")
    return done.stdout


def _remote_hint(remote: str | None) -> str:
    if not remote:
        return ""
    if remote.startswith("s3://"):
        return (
            f" for remote {remote} (check that the bucket exists, DVC_S3_ENDPOINT_URL for S3-compatible stores, "
            "and AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or AWS_PROFILE in the environment)"
        )
    return f" for remote {remote} (check that the directory exists or can be created, and is writable)"


def ensure_repo(root: Path = PROJECT_ROOT) -> None:
    """Initialise DVC in ``root`` if needed (with git when ``root`` is a git repository)."""
    if (root / ".dvc").is_dir():
        return
    _dvc(root, "init", "--quiet", *([] if (root / ".git").exists() else ["--no-scm"]))
    _dvc(root, "config", "core.analytics", "false")


def configure_remote(remote: str, endpoint_url: str = "", root: Path = PROJECT_ROOT) -> str:
    """Point the ``pipeline`` remote at ``remote`` (directory path or s3:// URL); returns its URL."""
    if "://" in remote and not remote.startswith("s3://"):
        raise VersioningError(f"DVC_REMOTE={remote!r}: use a local directory or an s3://bucket/prefix URL")
    url = (
        remote
        if remote.startswith("s3://")
        else str((root / remote).resolve() if not Path(remote).is_absolute() else Path(remote))
    )
    if not remote.startswith("s3://"):
        try:
            Path(url).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise VersioningError(
                f"DVC remote directory {url} cannot be created ({exc}); set DVC_REMOTE to a writable path"
            ) from exc
    _dvc(root, "remote", "add", "--local", "--force", "--default", REMOTE_NAME, url)
    if endpoint_url:
        _dvc(root, "remote", "modify", "--local", REMOTE_NAME, "endpointurl", endpoint_url)
    else:
        _dvc(root, "remote", "modify", "--local", "--unset", REMOTE_NAME, "endpointurl")
    return url


def dvc_file(target: Path, root: Path = PROJECT_ROOT) -> Path:
    return root / f"{target.relative_to(root)}.dvc"


def track(targets: list[Path], root: Path = PROJECT_ROOT) -> dict[str, dict]:
    """``dvc add`` each target; returns {target: {"md5", "size", "nfiles", "dvc_file": text}}."""
    relative = []
    for target in targets:
        target = Path(target).resolve()
        if not target.exists():
            raise VersioningError(f"{target}: nothing to version; run the earlier steps first")
        try:
            relative.append(str(target.relative_to(root.resolve())))
        except ValueError:
            raise VersioningError(f"{target} is outside the DVC project {root}; keep data paths inside it") from None
    _dvc(root, "add", "--quiet", *relative)
    versions = {}
    for rel in relative:
        text = (root / f"{rel}.dvc").read_text()
        out = yaml.safe_load(text)["outs"][0]
        versions[rel] = {"md5": out["md5"], "size": out.get("size"), "nfiles": out.get("nfiles"), "dvc_file": text}
    return versions


def push(targets: list[str], remote: str, root: Path = PROJECT_ROOT) -> None:
    _dvc(root, "push", "--quiet", "--remote", REMOTE_NAME, *[f"{t}.dvc" for t in targets], remote=remote)


def git_commit(root: Path = PROJECT_ROOT) -> str | None:
    done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 else None


RUN_ID = re.compile(r"^\d{8}-\d{6}-[0-9a-f]{4}$")  # what the runner names runs


def _run_record(version: str, runs_dir: Path) -> dict | None:
    """What 03_version recorded in run ``version`` (None when ``version`` is not the id of a run in ``runs_dir``)."""
    if not RUN_ID.match(version):
        return None
    outputs = runs_dir / version / "outputs.json"
    if not outputs.exists():
        return None
    for values in json.loads(outputs.read_text()).values():
        if "dvc_versions" in values:
            return values
    raise VersioningError(f"run {version} did not version its data (no 03_version outputs in {outputs})")


def recorded_dvc_files(version: str, runs_dir: Path, root: Path = PROJECT_ROOT) -> dict[str, str]:
    """The .dvc files of a data version: a pipeline run id (its outputs.json) or a git revision."""
    record = _run_record(version, runs_dir)
    if record is not None:
        return _inside(root, {f"{t}.dvc": v["dvc_file"] for t, v in record["dvc_versions"].items()}, version)
    known = subprocess.run(
        ["git", "rev-parse", "--verify", "--quiet", "--end-of-options", f"{version}^{{commit}}"],
        cwd=root, capture_output=True, text=True,
    )  # fmt: skip
    if version.startswith("-") or known.returncode:
        raise VersioningError(
            f"--data-version {version!r}: neither the id of a run in {runs_dir} (YYYYMMDD-HHMMSS-xxxx) nor a git revision"
        )
    files = subprocess.run(["git", "ls-tree", "-r", "--name-only", known.stdout.strip()], cwd=root, capture_output=True, text=True)
    found = {}
    for name in files.stdout.split():
        if name.endswith(".dvc") and not name.startswith(".dvc/"):
            found[name] = subprocess.run(
                ["git", "show", f"{version}:{name}"], cwd=root, capture_output=True, text=True
            ).stdout
    if not found:
        raise VersioningError(
            f"git revision {version} has no .dvc files; commit them after a run to version data in git"
        )
    return _inside(root, found, version)


def _inside(root: Path, files: dict[str, str], version: str) -> dict[str, str]:
    """Refuse recorded pointers that would be written outside the project, or that are not .dvc files."""
    for name in files:
        target = (root / name).resolve()
        inside = target.is_relative_to(root.resolve()) and not Path(name).is_absolute()
        if not inside or not name.endswith(".dvc") or Path(name).parts[0] in (".dvc", ".git"):
            raise VersioningError(
                f"--data-version {version}: its record names {name!r}, which is not a .dvc file inside the project "
                f"{root}; nothing was restored"
            )
    return files


def _remote_of(version: str, runs_dir: Path, params: dict) -> tuple[str, str]:
    """The remote a run pushed to (from its outputs), else DVC_REMOTE / DVC_S3_ENDPOINT_URL of the parameters."""
    record = _run_record(version, runs_dir)
    if record is not None:
        return record["dvc_remote"], record.get("dvc_s3_endpoint_url", "")
    return params.get("DVC_REMOTE", DEFAULT_REMOTE), params.get("DVC_S3_ENDPOINT_URL", "")


def restore(version: str, runs_dir: Path, params: dict | None = None, root: Path = PROJECT_ROOT) -> list[str]:
    """Bring back the data of ``version`` (run id or git rev) from its remote; returns the targets."""
    remote, endpoint_url = _remote_of(version, runs_dir, params or {})
    ensure_repo(root)
    configure_remote(remote, endpoint_url, root)
    files = recorded_dvc_files(version, runs_dir, root)
    before = {name: (root / name).read_text() if (root / name).exists() else None for name in files}
    try:
        for name, text in files.items():
            atomic.write_text(root / name, text)
        _dvc(root, "pull", "--quiet", "--force", "--remote", REMOTE_NAME, *files, remote=remote)
    except Exception:  # the pointers go back to what they were: the working copy is left as it was
        for name, earlier in before.items():
            if earlier is None:
                (root / name).unlink(missing_ok=True)
            else:
                atomic.write_text(root / name, earlier)
        raise
    return [name[: -len(".dvc")] for name in files]
