"""What a run keeps in ``runs/<run_id>/run.json``: its state (enough to resume it) and, if a notebook failed, how."""

import json
import secrets
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from lib import atomic
from lib.errors import ParameterError
from lib.redact import redact

DONE = ("ok", "cached")


@dataclass(frozen=True)
class Failure:
    """A notebook that raised: where, what, and the code of the failing cell."""

    notebook: str
    executed_notebook: str
    error: str
    cell_index: int | None = None  # 0-based in the executed notebook (after papermill's injected cell)
    execution_count: int | None = None
    source: str = ""

    def format(self, run_id: str) -> str:
        """One readable block: notebook, cell, error, where the executed copy is, how to resume."""
        cell = "?" if self.cell_index is None else str(self.cell_index + 1)
        source = "\n".join(f"        {line}" for line in self.source.splitlines()[:12])
        return (
            f"Pipeline run {run_id} FAILED\n"
            f"  notebook:  {self.notebook}\n"
            f"  cell:      {cell} of the executed notebook (execution count {self.execution_count})\n"
            f"  error:     {redact(self.error)}\n"
            f"  code:\n{source}\n"
            f"  executed:  {self.executed_notebook} (the failing cell is marked)\n"
            f"  resume:    python run_pipeline.py --run-id {run_id}"
        )


@dataclass
class RunState:
    """What ``runs/<run_id>/run.json`` keeps: enough to resume a failed run."""

    run_id: str
    profile: str
    overrides: dict
    notebooks: list[str]
    status: dict[str, str] = field(default_factory=dict)
    durations: dict[str, float] = field(default_factory=dict)
    mlflow_run_id: str | None = None
    started: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    finished: str | None = None
    failure: Failure | None = None
    cached_from: dict[str, str] = field(default_factory=dict)  # notebook -> the run that computed its outputs

    @property
    def ok(self) -> bool:
        return all(self.status.get(n) in DONE for n in self.notebooks)

    def save(self, run_dir: Path) -> None:
        atomic.write_text(run_dir / "run.json", json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, run_dir: Path) -> "RunState":
        path = run_dir / "run.json"
        if not path.exists():
            raise ParameterError(
                f"--run-id: no run at {run_dir} (run.json missing); see the folders in {run_dir.parent}"
            )
        values = json.loads(path.read_text())
        failure = values.pop("failure", None)
        return cls(**values, failure=Failure(**failure) if failure else None)

    @staticmethod
    def new_id() -> str:
        return datetime.now(UTC).strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(2)
