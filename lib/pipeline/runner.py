"""Run the pipeline notebooks in order with papermill and keep a browsable, MLflow-logged record.

Parameters: a profile file (``params/<profile>.yaml``) merged with ``KEY=VALUE`` overrides, later
wins. A parameter goes to every selected notebook whose ``parameters`` cell declares it; a name no
selected notebook declares is refused with the valid names (papermill itself only warns).
Each run lives in ``runs/<run_id>/``: executed notebooks, their HTML, ``params.yaml``,
``outputs.json``, ``run.json`` (state, for ``--run-id`` resume) and ``index.html``.
"""

import ast
import json
import os
import re
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import papermill as pm
import yaml
from jupyter_client.manager import AsyncKernelManager
from papermill.engines import NBClientEngine, papermill_engines
from papermill.exceptions import PapermillExecutionError
from traitlets.config import Config

from lib import atomic
from lib.config import PROJECT_ROOT, QUIET_ENVIRONMENT, Settings, get_settings, project_relative
from lib.errors import ParameterError
from lib.pipeline import cache, parameters, report
from lib.pipeline import outputs as nb_outputs
from lib.pipeline.record import DONE, Failure, RunState

if TYPE_CHECKING:  # imported where a run starts: MLflow is not needed to parse or check parameters
    from lib.pipeline import tracking

_NOTEBOOK_NAME = re.compile(r"^\d\d_[a-z0-9_]+$")


def _print(message: str) -> None:
    print(message, flush=True)


class _ShutdownWithoutInterrupt(AsyncKernelManager):
    """jupyter_client interrupts (SIGINT) a kernel before it asks it to shut down; a kernel that is idle, as
    every kernel is once its notebook ran, sometimes takes that signal in its event loop and logs
    ``[IPKernelApp] ERROR | KeyboardInterrupt caught in kernel`` to the terminal. Papermill shuts a kernel
    down only when no cell runs, so the shutdown request alone is sent (a cell that times out is still
    interrupted: that interrupt is not part of a shutdown)."""

    async def _async_interrupt_kernel(self) -> None:
        if not self.shutting_down:
            await super()._async_interrupt_kernel()


class _QuietShutdownEngine(NBClientEngine):
    """papermill's engine, with kernels shut down without an interrupt (``_ShutdownWithoutInterrupt``)."""

    @classmethod
    def execute_managed_notebook(cls, nb_man, kernel_name, **kwargs):
        kwargs.setdefault("kernel_manager_class", _ShutdownWithoutInterrupt)
        return super().execute_managed_notebook(nb_man, kernel_name, **kwargs)


class _PlainProgressEngine(_QuietShutdownEngine):
    """One plain line per finished cell, for logs that are not a TTY (a TTY gets papermill's progress bar)."""

    @classmethod
    def execute_managed_notebook(cls, nb_man, kernel_name, **kwargs):
        total = len(nb_man.nb.cells)
        complete = nb_man.cell_complete
        name = Path(nb_man.nb.metadata.get("papermill", {}).get("input_path", "notebook")).stem

        def cell_complete(cell, cell_index=None, **kw):
            complete(cell, cell_index=cell_index, **kw)
            _print(f"      {name}: cell {cell_index + 1}/{total} done")

        nb_man.cell_complete = cell_complete
        return super().execute_managed_notebook(nb_man, kernel_name, **kwargs)


papermill_engines.register("quiet-shutdown", _QuietShutdownEngine)
papermill_engines.register("plain-progress", _PlainProgressEngine)


def discover(notebooks_dir: Path) -> list[Path]:
    """The pipeline notebooks ``NN_name.ipynb``, in order."""
    found = sorted(p for p in Path(notebooks_dir).glob("*.ipynb") if _NOTEBOOK_NAME.match(p.stem))
    if not found:
        raise ParameterError(f"no pipeline notebooks (NN_name.ipynb) in {notebooks_dir}")
    return found


def _match(names: list[str], wanted: str, flag: str) -> str:
    hits = [n for n in names if n == wanted or n.startswith(f"{wanted}_") or n.split("_", 1)[-1] == wanted]
    if len(hits) != 1:
        raise ParameterError(f"{flag} {wanted!r} matches {hits or 'no notebook'}; choose one of {names}")
    return hits[0]


def select(
    notebooks: list[Path], only: list[str] | None = None, start: str | None = None, until: str | None = None
) -> list[Path]:
    """The slice of notebooks to run: ``only`` some, or ``start``..``until`` inclusive."""
    names = [p.stem for p in notebooks]
    if only:
        if start or until:
            raise ParameterError("--only cannot be combined with --from/--until")
        chosen = {_match(names, o, "--only") for o in only}
        return [p for p in notebooks if p.stem in chosen]
    lo = names.index(_match(names, start, "--from")) if start else 0
    hi = names.index(_match(names, until, "--until")) if until else len(names) - 1
    if lo > hi:
        raise ParameterError(f"--from {start} comes after --until {until}")
    return notebooks[lo : hi + 1]


def load_profile(profile: str, params_dir: Path) -> dict:
    """Parameters of a profile name (``params/<name>.yaml``) or a YAML file path."""
    path = Path(profile) if profile.endswith((".yaml", ".yml")) else Path(params_dir) / f"{profile}.yaml"
    if not path.exists():
        known = sorted(p.stem for p in Path(params_dir).glob("*.yaml"))
        raise ParameterError(f"profile {profile!r} not found at {path}; known profiles: {known}")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ParameterError(f"{path}: a profile is a mapping of PARAMETER: value")
    return data


def parse_overrides(pairs: list[str] | None) -> dict:
    """``["ROWS=1000", "SOURCE=data.csv"]`` -> typed values (YAML rules: 1000 is an int)."""
    parsed = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ParameterError(f"-p {pair!r}: write overrides as KEY=VALUE")
        try:
            parsed[key.strip()] = yaml.safe_load(value) if value.strip() else ""
        except yaml.YAMLError as exc:
            reason = str(exc).splitlines()[0]
            raise ParameterError(
                f"-p {pair!r}: the value is not valid YAML ({reason}); quote text, e.g. -p {key}='...'"
            ) from None
    return parsed


def declared_parameters(notebook: Path) -> dict:
    """Names and defaults of the notebook's ``parameters`` cell."""
    return pm.inspect_notebook(str(notebook))


def _refuse_unknown(names: list[str], declared: dict[str, dict], what: str) -> None:
    unknown = sorted(k for k in names if not any(k in d for d in declared.values()))
    if unknown:
        valid = "\n".join(f"  {name}: {', '.join(sorted(d)) or '(none)'}" for name, d in declared.items())
        raise ParameterError(
            f"unknown parameter(s) {', '.join(unknown)}: no {what} declares them.\nValid parameters by notebook:\n{valid}"
        )


def plan_parameters(
    selected: list[Path], profile: dict, overrides: dict, pipeline: list[Path] | None = None
) -> dict[str, dict]:
    """Each selected notebook's parameters (profile, then overrides: later wins).

    An override must be declared by a selected notebook; a profile key by some pipeline notebook
    (a profile serves every slice of the pipeline).
    """
    declared = {nb.stem: declared_parameters(nb) for nb in selected}
    _refuse_unknown(list(overrides), declared, "selected notebook")
    everywhere = {**{nb.stem: declared_parameters(nb) for nb in pipeline or []}, **declared}
    _refuse_unknown(list(profile), everywhere, "pipeline notebook")
    params = {**profile, **overrides}
    return {
        name: {k: parameters.check(k, v, d[k]["default"], name) for k, v in params.items() if k in d}
        for name, d in declared.items()
    }


@dataclass
class RunResult:
    run_id: str
    run_dir: Path
    ok: bool
    outputs: dict
    mlflow_run_id: str | None
    failure: Failure | None = None


def _point_latest(runs_dir: Path, run_id: str) -> None:
    link = runs_dir / "latest"
    tmp = runs_dir / f".latest.{os.getpid()}"
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(run_id, target_is_directory=True)
    os.replace(tmp, link)


@contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    """Extra environment variables for the kernels started inside the block."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _execute(notebook: Path, executed: Path, params: dict, settings: Settings, tty: bool, env: dict) -> Failure | None:
    """Run one notebook with papermill; the failure, or None when it succeeded."""
    try:
        with _environment(env):
            pm.execute_notebook(
                str(notebook),
                str(executed),
                parameters=params,
                kernel_name=settings.kernel_name,
                cwd=str(PROJECT_ROOT),
                progress_bar=tty,
                engine_name="quiet-shutdown" if tty else "plain-progress",
                # IPC sockets: a kernel on this machine needs no TCP port (nor warns about one without encryption)
                config=Config({"KernelManager": {"transport": "ipc"}}),
            )
    except PapermillExecutionError as exc:
        error = f"{exc.ename}: {exc.evalue}"
        return Failure(notebook.stem, str(executed), error, exc.cell_index, exc.exec_count, exc.source)
    except Exception as exc:  # the kernel died or the notebook could not be read/written
        return Failure(notebook.stem, str(executed), f"{type(exc).__name__}: {exc}")
    return None


def _reuse_executed(source_run: Path, run_dir: Path, name: str) -> None:
    """A cache hit links the executed notebook and report of the run that computed them."""
    for suffix in (".ipynb", ".html"):
        original = source_run / f"{name}{suffix}"
        if original.exists() and source_run != run_dir:
            shutil.copy2(original, run_dir / original.name)


def _flatten(params: dict[str, dict]) -> dict[str, object]:
    return {f"{nb}.{k}": v for nb, values in params.items() for k, v in values.items()}


def _open_state(
    settings: Settings, notebooks: list[Path], profile: str, overrides: dict, slice_: tuple, run_id: str | None
) -> RunState:
    """A new run's state, or a failed run's (``run_id``) with the new overrides and selection."""
    if not run_id:
        return RunState(RunState.new_id(), profile, overrides, [p.stem for p in select(notebooks, *slice_)])
    state = RunState.load(Path(settings.runs_dir) / run_id)
    state.overrides = {**state.overrides, **overrides}
    if any(slice_):
        state.notebooks = [p.stem for p in select(notebooks, *slice_)]
    state.failure = None
    return state


@dataclass
class _Run:
    """One pipeline run in progress: where it lives, what it plans, what it recorded so far."""

    settings: Settings
    state: RunState
    plan: dict[str, dict]
    run_dir: Path
    outputs: dict
    tracker: "tracking.PipelineTracker"
    log: Callable[[str], None]
    tty: bool

    @property
    def outputs_path(self) -> Path:
        return self.run_dir / "outputs.json"

    def step(self, notebook: Path, position: str, force: bool, kernel_env: dict) -> None:
        """Run one notebook, or take it from the step cache; record it everywhere."""
        name, state = notebook.stem, self.state
        executed = self.run_dir / f"{name}.ipynb"
        cache_dir = Path(self.settings.runs_dir) / ".cache"
        cache_key = cache.key(notebook, self.plan[name], cache.upstream_data(self.outputs))
        hit = None if force else cache.lookup(cache_dir, name, cache_key)
        if hit:
            _reuse_executed(Path(self.settings.runs_dir) / hit["run_id"], self.run_dir, name)
            state.status[name], state.durations[name], self.outputs[name] = "cached", 0.0, hit["outputs"]
            state.cached_from[name] = hit["run_id"]
            self.log(
                f"{position} {name}: skipped, same code, parameters and upstream data as run "
                f"{hit['run_id']} (outputs verified); --force recomputes"
            )
        else:
            self.log(f"{position} {name} ...")
            state.status[name] = "running"
            state.save(self.run_dir)
            began = time.perf_counter()
            env = {**kernel_env, "FRAUD_NOTEBOOK": project_relative(notebook)}
            state.failure = _execute(notebook, executed, self.plan[name], self.settings, self.tty, env)
            state.durations[name] = round(time.perf_counter() - began, 2)
            state.status[name] = "failed" if state.failure else "ok"
            if not state.failure:
                self.outputs[name] = nb_outputs.read(executed)
                cache.store(cache_dir, name, cache_key, state.run_id, self.outputs[name])
        html = executed.with_suffix(".html")
        if executed.exists() and state.status[name] != "cached":
            html = report.render_notebook(executed)
        self.tracker.log_notebook(executed, html if html.exists() else None, self.outputs.get(name, {}), name)
        atomic.write_text(self.outputs_path, json.dumps(self.outputs, indent=2))
        state.save(self.run_dir)
        if state.failure:
            self.log(f"      {name} failed after {state.durations[name]:.1f} s")
        elif state.status[name] == "ok":
            self.log(f"      {name} done in {state.durations[name]:.1f} s")

    def finish(self) -> RunResult:
        state = self.state
        state.finished = datetime.now(UTC).isoformat(timespec="seconds")
        state.save(self.run_dir)
        index = report.write_index(self.run_dir, state, self.outputs, self.tracker.describe())
        files = [index, self.outputs_path, self.run_dir / "params.yaml", self.run_dir / "run.json"]
        self.tracker.finish(self.run_dir, files, ok=state.ok)
        self.log(
            state.failure.format(state.run_id) if state.failure else f"Pipeline run {state.run_id} finished: {index}"
        )
        return RunResult(state.run_id, self.run_dir, state.ok, self.outputs, state.mlflow_run_id, state.failure)


def run_pipeline(
    profile: str = "default",
    overrides: dict | None = None,
    only: list[str] | None = None,
    start: str | None = None,
    until: str | None = None,
    run_id: str | None = None,
    force: bool = False,
    data_version: str | None = None,
    settings: Settings | None = None,
    progress: bool | None = None,
    log: Callable[[str], None] = _print,
) -> RunResult:
    """Run (or resume) the pipeline; returns what happened, never raises for a failing notebook."""
    for name, value in QUIET_ENVIRONMENT.items():  # this process logs to MLflow too (before MLflow is imported)
        os.environ.setdefault(name, value)
    from lib.data import versioning
    from lib.pipeline import tracking

    settings = settings or get_settings()
    notebooks = discover(settings.notebooks_dir)
    state = _open_state(settings, notebooks, profile, dict(overrides or {}), (only, start, until), run_id)
    by_name = {p.stem: p for p in notebooks}
    missing = [n for n in state.notebooks if n not in by_name]
    if missing:
        raise ParameterError(
            f"run {state.run_id} used notebooks {missing} that are no longer in {settings.notebooks_dir}"
        )
    selected = [by_name[n] for n in state.notebooks]
    profile_values = load_profile(state.profile, settings.params_dir)
    plan = plan_parameters(selected, profile_values, state.overrides, notebooks)

    if data_version:  # before anything of this run is written: a failed restore leaves no trace
        restored = versioning.restore(data_version, Path(settings.runs_dir), {**profile_values, **state.overrides})
        log(f"Data version {data_version} restored: {', '.join(restored)}")

    run_dir = Path(settings.runs_dir) / state.run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic.write_text(
        run_dir / "params.yaml",
        yaml.safe_dump({"profile": state.profile, "overrides": state.overrides, "notebooks": plan}, sort_keys=False),
    )
    outputs_path = run_dir / "outputs.json"
    recorded = json.loads(outputs_path.read_text()) if outputs_path.exists() else {}
    tracker = tracking.PipelineTracker(settings, state.run_id, state.mlflow_run_id)
    state.mlflow_run_id = tracker.mlflow_run_id
    tracker.log_params(
        _flatten(plan), {"profile": state.profile, **({"data_version": data_version} if data_version else {})}
    )
    state.save(run_dir)
    _point_latest(Path(settings.runs_dir), state.run_id)

    tty = sys.stdout.isatty() if progress is None else progress
    run = _Run(settings, state, plan, run_dir, recorded, tracker, log, tty)
    todo = [nb for nb in selected if state.status.get(nb.stem) not in DONE]
    log(f"Pipeline run {state.run_id}: {len(todo)} of {len(selected)} notebook(s) to run -> {run_dir}")
    kernel_env = {**QUIET_ENVIRONMENT, **tracking.kernel_environment(settings, state.run_id, tracker.mlflow_run_id)}
    for position, notebook in enumerate(todo, start=1):
        run.step(notebook, f"[{position}/{len(todo)}]", force, kernel_env)
        if state.failure:
            break
    return run.finish()


def check_profile_defaults(profile: str = "default", settings: Settings | None = None) -> list[str]:
    """Differences between a profile and the notebooks' own defaults (the default profile must match)."""
    settings = settings or get_settings()
    values = load_profile(profile, settings.params_dir)
    problems = []
    for notebook in discover(settings.notebooks_dir):
        for name, info in declared_parameters(notebook).items():
            if name in values:
                default = ast.literal_eval(info["default"]) if info["default"] else None
                if default != values[name]:
                    problems.append(
                        f"{notebook.stem}.{name}: notebook default {info['default']} != profile {values[name]!r}"
                    )
    return problems
