"""The pipeline runner on small fixture notebooks: parameters, slicing, failure report, resume, MLflow record."""

import json

import pytest
import yaml
from mlflow.tracking import MlflowClient

from lib.errors import ParameterError
from lib.pipeline import runner
from lib.pipeline.tracking import find_pipeline_run
from tests.conftest import write_notebook

RECORD = "from lib.pipeline import outputs\noutputs.record(value=VALUE * 2, label=LABEL)"


@pytest.fixture
def notebooks(tmp_path):
    folder = tmp_path / "notebooks"
    write_notebook(folder / "01_first.ipynb", "VALUE = 1\nLABEL = 'a'", RECORD)
    write_notebook(folder / "02_second.ipynb", "SHOULD_FAIL = False", "assert not SHOULD_FAIL, 'asked to fail'")
    write_notebook(
        folder / "03_third.ipynb", "VALUE = 5", "from lib.pipeline import outputs\noutputs.record(third=VALUE)"
    )
    (folder / "scratch.ipynb").write_text("{}")  # not NN_name: not part of the pipeline
    params = tmp_path / "params"
    params.mkdir()
    (params / "default.yaml").write_text("VALUE: 3\nSHOULD_FAIL: false\n")
    return folder, params


def test_discover_and_select(notebooks):
    found = runner.discover(notebooks[0])
    assert [p.stem for p in found] == ["01_first", "02_second", "03_third"]
    assert [p.stem for p in runner.select(found, only=["second"])] == ["02_second"]
    assert [p.stem for p in runner.select(found, start="02")] == ["02_second", "03_third"]
    assert [p.stem for p in runner.select(found, until="02_second")] == ["01_first", "02_second"]
    with pytest.raises(ParameterError, match="matches no notebook"):
        runner.select(found, only=["nope"])
    with pytest.raises(ParameterError, match="comes after"):
        runner.select(found, start="03", until="01")


def test_overrides_are_typed_and_later_wins():
    assert runner.parse_overrides(["ROWS=1000", "SOURCE=a.csv", "ROWS=5", "RATE=0.5", "FLAG=true"]) == {
        "ROWS": 5,
        "SOURCE": "a.csv",
        "RATE": 0.5,
        "FLAG": True,
    }
    with pytest.raises(ParameterError, match="KEY=VALUE"):
        runner.parse_overrides(["ROWS"])


def test_unknown_parameter_is_refused_with_valid_names(notebooks, make_settings):
    settings = make_settings(*notebooks)
    with pytest.raises(ParameterError) as info:
        runner.run_pipeline(overrides={"VALEU": 2}, settings=settings, log=lambda _: None)
    message = str(info.value)
    assert "VALEU" in message and "01_first: LABEL, VALUE" in message and "02_second: SHOULD_FAIL" in message
    assert not (settings.runs_dir).exists() or not any(settings.runs_dir.iterdir())


def test_parameter_only_declared_by_unselected_notebook_is_refused(notebooks, make_settings):
    with pytest.raises(ParameterError, match="SHOULD_FAIL"):
        runner.run_pipeline(overrides={"SHOULD_FAIL": True}, only=["01"], settings=make_settings(*notebooks))


def test_a_failed_pipeline_step_is_reported_not_its_missing_record(tmp_path, make_settings, capsys):
    """A notebook named as a pipeline step (its figures come from a typed record, lib.pipeline.records) that fails
    before recording: the run reports the notebook's error, not a TypeError about the record it never wrote."""
    folder = tmp_path / "notebooks"
    write_notebook(folder / "01_acquire.ipynb", "SOURCE = 'x.csv'", "raise FileNotFoundError(SOURCE)")
    params = tmp_path / "params"
    params.mkdir()
    (params / "default.yaml").write_text("SOURCE: x.csv\n")
    failed = runner.run_pipeline(settings=make_settings(folder, params), progress=False)
    assert not failed.ok and failed.outputs == {}
    assert "01_acquire" in capsys.readouterr().out and "FileNotFoundError: x.csv" in failed.failure.format(
        failed.run_id
    )


def test_failure_is_reported_kept_and_resumable(notebooks, make_settings, capsys):
    settings = make_settings(*notebooks)
    failed = runner.run_pipeline(overrides={"SHOULD_FAIL": True, "LABEL": "x"}, settings=settings, progress=False)
    assert not failed.ok
    printed = capsys.readouterr().out
    assert "FAILED" in printed and "02_second" in printed and "AssertionError: asked to fail" in printed
    assert f"--run-id {failed.run_id}" in printed
    assert failed.failure.cell_index == 3  # 0-based, after papermill's injected-parameters cell
    assert "cell:      4 of the executed notebook (execution count 3)" in printed
    # the failed executed notebook is kept with papermill's error marker
    executed = json.loads((failed.run_dir / "02_second.ipynb").read_text())
    assert any("papermill-error-cell-tag" in c.get("metadata", {}).get("tags", []) for c in executed["cells"])
    assert (failed.run_dir / "02_second.html").exists()
    assert not (failed.run_dir / "03_third.ipynb").exists()
    assert failed.outputs == {"01_first": {"value": 6, "label": "x"}}  # profile VALUE=3, doubled
    mlflow_run = find_pipeline_run(settings.mlflow_tracking_uri, settings.mlflow_experiment, failed.run_id)
    assert mlflow_run.info.status == "FAILED"

    first_mtime = (failed.run_dir / "01_first.ipynb").stat().st_mtime_ns
    resumed = runner.run_pipeline(run_id=failed.run_id, overrides={"SHOULD_FAIL": False}, settings=settings)
    assert resumed.ok and resumed.run_id == failed.run_id
    assert (failed.run_dir / "01_first.ipynb").stat().st_mtime_ns == first_mtime  # not re-run
    assert resumed.outputs["03_third"] == {"third": 3}  # the profile value reaches every notebook declaring it
    assert resumed.mlflow_run_id == failed.mlflow_run_id
    client = MlflowClient(settings.mlflow_tracking_uri)
    run = client.get_run(resumed.mlflow_run_id)
    assert run.info.status == "FINISHED"
    assert run.data.metrics["01_first.value"] == 6
    assert (
        run.data.params["02_second.SHOULD_FAIL"] == "True"
        and run.data.tags["override.02_second.SHOULD_FAIL"] == "False"
    )
    logged = {
        a.path for folder in ("notebooks", "reports", "run") for a in client.list_artifacts(run.info.run_id, folder)
    }
    assert {"notebooks/02_second.ipynb", "reports/03_third.html", "run/index.html", "run/outputs.json"} <= logged


def test_run_record_layout(notebooks, make_settings):
    settings = make_settings(*notebooks)
    result = runner.run_pipeline(until="01", overrides={"VALUE": 4}, settings=settings, log=lambda _: None)
    assert result.ok
    run_dir = result.run_dir
    assert (settings.runs_dir / "latest").resolve() == run_dir.resolve()
    params = yaml.safe_load((run_dir / "params.yaml").read_text())
    assert params["notebooks"] == {"01_first": {"VALUE": 4}}
    assert json.loads((run_dir / "outputs.json").read_text()) == {"01_first": {"value": 8, "label": "a"}}
    index = (run_dir / "index.html").read_text()
    assert 'href="01_first.html"' in index and 'href="01_first.ipynb"' in index and result.run_id in index
    html = (run_dir / "01_first.html").read_text()
    assert "cdnjs" not in html  # reports open offline


def test_profile_serves_every_slice_but_a_typo_in_it_is_refused(notebooks, make_settings):
    folder, params = notebooks
    settings = make_settings(folder, params)
    assert runner.run_pipeline(only=["01"], settings=settings, log=lambda _: None).ok  # SHOULD_FAIL is 02's
    (params / "typo.yaml").write_text("VALEU: 3\n")
    with pytest.raises(ParameterError, match="no pipeline notebook declares"):
        runner.run_pipeline(profile="typo", settings=settings)


def test_step_cache_skips_unchanged_steps_only(tmp_path, make_settings):
    folder = tmp_path / "nb"
    produce = (
        "from pathlib import Path\nfrom lib.pipeline import outputs\nfrom lib.hashing import file_sha256\n"
        "Path(OUT).write_text(f'data {SEED}')\n"
        "outputs.record(seed=SEED, data_outputs={'data': {'path': OUT, 'sha256': file_sha256(Path(OUT))}})"
    )
    write_notebook(folder / "01_make.ipynb", f"SEED = 1\nOUT = '{tmp_path / 'data.txt'}'", produce)
    write_notebook(
        folder / "02_use.ipynb", "FACTOR = 2", "from lib.pipeline import outputs\noutputs.record(used=FACTOR)"
    )
    params = tmp_path / "params"
    params.mkdir()
    (params / "default.yaml").write_text("{}\n")
    settings = make_settings(folder, params)
    lines: list[str] = []
    first = runner.run_pipeline(settings=settings, log=lines.append)
    second = runner.run_pipeline(settings=settings, log=lines.append)
    assert json.loads((second.run_dir / "run.json").read_text())["status"] == {"01_make": "cached", "02_use": "ok"}
    assert any(f"01_make: skipped, same code, parameters and upstream data as run {first.run_id}" in ln for ln in lines)
    assert (second.run_dir / "01_make.html").exists() and second.outputs["01_make"] == first.outputs["01_make"]
    changed = runner.run_pipeline(overrides={"SEED": 2}, settings=settings, log=lines.append)
    assert json.loads((changed.run_dir / "run.json").read_text())["status"]["01_make"] == "ok"
    forced = runner.run_pipeline(overrides={"SEED": 2}, force=True, settings=settings, log=lines.append)
    assert json.loads((forced.run_dir / "run.json").read_text())["status"]["01_make"] == "ok"
    (tmp_path / "data.txt").write_text("tampered")  # an output that changed is not trusted
    tampered = runner.run_pipeline(overrides={"SEED": 2}, settings=settings, log=lines.append)
    assert json.loads((tampered.run_dir / "run.json").read_text())["status"]["01_make"] == "ok"


def test_unknown_run_id(notebooks, make_settings):
    with pytest.raises(ParameterError, match=r"run\.json missing"):
        runner.run_pipeline(run_id="nope", settings=make_settings(*notebooks))


def test_cli_exit_codes(notebooks, make_settings, monkeypatch):
    import run_pipeline

    settings = make_settings(*notebooks)
    monkeypatch.setattr(runner, "get_settings", lambda: settings)
    assert run_pipeline.main(["-p", "NOPE=1"]) == 2
    assert run_pipeline.main(["-p", "SHOULD_FAIL=true"]) == 1
    assert run_pipeline.main(["--until", "01_first"]) == 0


def test_default_profile_matches_notebook_defaults():
    assert runner.check_profile_defaults("default") == []


def test_every_pipeline_notebook_follows_the_conventions():
    from lib.config import PROJECT_ROOT

    for path in runner.discover(PROJECT_ROOT / "notebooks"):
        nb = json.loads(path.read_text())
        code = [c for c in nb["cells"] if c["cell_type"] == "code"]
        assert sum("parameters" in c["metadata"].get("tags", []) for c in code) == 1, path
        assert not any(c.get("outputs") or c.get("execution_count") for c in code), f"{path} committed with outputs"
        source = "\n".join("".join(c["source"]) for c in code)
        assert "\ndef " not in f"\n{source}" and "\nclass " not in f"\n{source}", f"{path} defines code; move it to lib"
        assert "outputs.record(" in "".join(code[-1]["source"]), f"{path}: the last cell must record outputs"


def test_the_step_cache_sees_an_edit_in_any_subpackage(tmp_path):
    """A change in lib/model/*.py (or any other file of lib) changes the code fingerprint of every step."""
    import shutil

    from lib.config import PROJECT_ROOT
    from lib.pipeline.cache import lib_fingerprint

    lib = tmp_path / "lib"
    shutil.copytree(PROJECT_ROOT / "lib", lib, ignore=shutil.ignore_patterns("__pycache__"))
    before = lib_fingerprint(lib)
    assert lib_fingerprint(lib) == before == lib_fingerprint(PROJECT_ROOT / "lib")
    train = lib / "model" / "train.py"
    train.write_text(train.read_text() + "\n# an edit\n")
    edited = lib_fingerprint(lib)
    assert edited != before
    (lib / "data" / "new_module.py").write_text('"""new"""\n')
    assert lib_fingerprint(lib) != edited


def test_a_finished_kernel_is_shut_down_without_an_interrupt(tmp_path, make_settings):
    """jupyter_client sends SIGINT before its shutdown request; a kernel still finishing a message handler
    logged it as ``[IPKernelApp] ERROR | KeyboardInterrupt caught in kernel.`` in a run's terminal (now and
    then, after 07). The runner's kernels get the shutdown request alone. An idle kernel ignores SIGINT, so
    the notebook makes its idle handler one that leaves a mark (it fails with jupyter_client's own manager)."""
    marker = tmp_path / "interrupted"
    folder = tmp_path / "notebooks"
    listen = (
        "import pathlib, signal\n"
        "def heard(*_):\n    pathlib.Path(MARK).write_text('SIGINT')\n"
        "get_ipython().kernel.post_handler_hook = lambda: signal.signal(signal.SIGINT, heard)  # idle: not SIG_IGN"
    )
    write_notebook(folder / "01_listen.ipynb", f"MARK = {str(marker)!r}", listen)
    params = tmp_path / "params"
    params.mkdir()
    (params / "default.yaml").write_text("{}\n")
    for tty in (False, True):  # the plain-progress engine, and the one with papermill's progress bar
        runner._execute(folder / "01_listen.ipynb", tmp_path / f"out-{tty}.ipynb", {}, make_settings(folder, params),
                        tty, {})  # fmt: skip
        assert not marker.exists()
