"""DVC versions on a real local remote and a real S3-compatible server (moto) on 127.0.0.1; the step cache."""

import json
import shutil
import subprocess

import boto3
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lib.data import versioning
from lib.data.acquire import write_batches
from lib.data.simulate import simulate_batches
from lib.hashing import content_sha256
from tests.integration.conftest import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]
RUN = "20261201-120000-ab12"  # a run id as the runner names them


@pytest.fixture
def project(tmp_path):
    """A git repository with DVC and two data folders, like the pipeline's data/raw and data/processed."""
    root = tmp_path / "project"
    root.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    versioning.ensure_repo(root)
    write_batches(simulate_batches(5_000, seed=1), root / "data" / "raw" / "transactions.parquet")
    (root / "data" / "processed" / "split=train").mkdir(parents=True)
    pq.write_table(
        pa.table({"log_amount": [0.5, 1.5], "isFraud": [0, 1]}),
        root / "data" / "processed" / "split=train" / "part-0.parquet",
    )
    (root / "data" / "processed" / "manifest.json").write_text('{"rows": 5000}')
    return root


def _version_and_forget(project, remote, endpoint=""):
    """What 03_version does, then delete the working copy; returns the hashes and a runs folder with the record."""
    versioning.configure_remote(remote, endpoint, project)
    targets = [project / "data" / "raw", project / "data" / "processed"]
    before = {t.name: content_sha256(t) for t in targets}
    versions = versioning.track(targets, project)
    versioning.push(list(versions), remote, project)
    runs = project / "runs"
    (runs / RUN).mkdir(parents=True)
    record = {"dvc_versions": versions, "dvc_remote": remote, "dvc_s3_endpoint_url": endpoint}
    (runs / RUN / "outputs.json").write_text(json.dumps({"03_version": record}))
    for t in targets:
        shutil.rmtree(t)
    shutil.rmtree(project / ".dvc" / "cache", ignore_errors=True)  # only the remote has the data now
    return before, versions, runs


def test_local_remote_round_trip_restores_byte_identical_data(project, tmp_path):
    remote = str(tmp_path / "remote")
    before, versions, runs = _version_and_forget(project, remote)
    assert set(versions) == {"data/raw", "data/processed"} and all(v["md5"].endswith(".dir") for v in versions.values())
    restored = versioning.restore(RUN, runs, root=project)
    assert sorted(restored) == ["data/processed", "data/raw"]
    assert {t: content_sha256(project / "data" / t) for t in ("raw", "processed")} == before


def test_restore_from_a_git_revision(project, tmp_path):
    remote = str(tmp_path / "remote")
    versioning.configure_remote(remote, "", project)
    versions = versioning.track([project / "data" / "raw"], project)
    versioning.push(list(versions), remote, project)
    before = content_sha256(project / "data" / "raw")
    subprocess.run(["git", "add", "data/raw.dvc", ".dvc", ".dvcignore"], cwd=project, check=True)
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm", "data v1"],
        cwd=project,
        check=True,
    )
    rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=project, capture_output=True, text=True).stdout.strip()
    shutil.rmtree(project / "data" / "raw")
    versioning.restore(rev, project / "runs", {"DVC_REMOTE": remote}, root=project)
    assert content_sha256(project / "data" / "raw") == before


@pytest.fixture
def s3_server(monkeypatch):
    """moto's S3-compatible server, for real, on 127.0.0.1."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    for key, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(key, value)
    endpoint = f"http://127.0.0.1:{port}"
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket="paysim-data")
    yield endpoint
    server.stop()


def test_s3_remote_push_and_pull(project, s3_server):
    before, _, runs = _version_and_forget(project, "s3://paysim-data/dvc", s3_server)
    keys = boto3.client("s3", endpoint_url=s3_server).list_objects_v2(Bucket="paysim-data", Prefix="dvc/")
    assert keys["KeyCount"] > 0  # the data really went to the server
    versioning.restore(RUN, runs, root=project)
    assert {t: content_sha256(project / "data" / t) for t in ("raw", "processed")} == before


def test_bad_bucket_names_the_remote_and_the_fix(project, s3_server):
    versioning.configure_remote("s3://no-such-bucket/dvc", s3_server, project)
    versions = versioning.track([project / "data" / "raw"], project)
    before = content_sha256(project / "data" / "raw")
    with pytest.raises(versioning.VersioningError) as info:
        versioning.push(list(versions), "s3://no-such-bucket/dvc", project)
    message = str(info.value)
    assert "s3://no-such-bucket/dvc" in message and "bucket exists" in message
    assert content_sha256(project / "data" / "raw") == before  # earlier outputs untouched


def test_missing_credentials_name_the_remote_and_the_fix(project, s3_server, monkeypatch, tmp_path):
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(key)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    versioning.configure_remote("s3://paysim-data/dvc", s3_server, project)
    versions = versioning.track([project / "data" / "raw"], project)
    with pytest.raises(versioning.VersioningError, match=r"s3://paysim-data/dvc.*AWS_ACCESS_KEY_ID"):
        versioning.push(list(versions), "s3://paysim-data/dvc", project)


def test_unusable_local_remote_is_named(project, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(versioning.VersioningError, match=r"cannot be created.*DVC_REMOTE"):
        versioning.configure_remote(str(blocker / "remote"), "", project)


def test_unknown_data_version(project):
    with pytest.raises(versioning.VersioningError, match="neither the id of a run"):
        versioning.restore("nope", project / "runs", root=project)


@pytest.mark.parametrize("version", ["../../../elsewhere/x", "--output=/tmp/x", "20261201-120000-ab12/../../x"])
def test_a_data_version_must_be_a_run_here_or_a_git_revision(project, version):
    with pytest.raises(versioning.VersioningError, match="neither the id of a run"):
        versioning.restore(version, project / "runs", root=project)
    assert not list(project.parent.rglob("x.dvc"))


def test_a_crafted_record_writes_nothing_outside_the_project(project, tmp_path):
    runs = project / "runs"
    (runs / RUN).mkdir(parents=True)
    crafted = {"dvc_versions": {"../../outside/data": {"dvc_file": "outs: []"}}, "dvc_remote": str(tmp_path / "r")}
    (runs / RUN / "outputs.json").write_text(json.dumps({"03_version": crafted}))
    with pytest.raises(versioning.VersioningError, match=r"not a \.dvc file inside the project"):
        versioning.restore(RUN, runs, root=project)
    assert not (project.parent.parent / "outside").exists()


def test_a_failed_pull_puts_the_pointers_back(project, tmp_path):
    """The README promises that a failed restore leaves the working copy as it was: the .dvc files too."""
    remote = str(tmp_path / "remote")
    _, versions, runs = _version_and_forget(project, remote)
    current = {name: (project / f"{name}.dvc").read_text() for name in versions}
    other = json.loads((runs / RUN / "outputs.json").read_text())
    for version in other["03_version"]["dvc_versions"].values():  # a record whose data no remote holds
        version["dvc_file"] = version["dvc_file"].replace(version["md5"][:8], "00000000")
    (runs / "20261201-130000-cd34").mkdir()
    (runs / "20261201-130000-cd34" / "outputs.json").write_text(json.dumps(other))
    with pytest.raises(versioning.VersioningError):
        versioning.restore("20261201-130000-cd34", runs, root=project)
    assert {name: (project / f"{name}.dvc").read_text() for name in versions} == current
