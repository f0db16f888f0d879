"""Print a sha256 per file of a checkout's own work: data/, runs/, mlflow.db, mlartifacts/, the DVC cache.

`.ci/run` prints it before and after `make test` and fails if anything changed: tests work in copies.
"""

import hashlib
import os
import sys
from pathlib import Path

ROOT = Path(sys.argv[1] if len(sys.argv) > 1 else ".").resolve()
PLACES = ("data", "runs", "mlflow.db", "mlartifacts", ".dvc/cache", "dvc-remote")

for place in PLACES:
    top = ROOT / place
    paths = (
        [top]
        if top.is_file() or top.is_symlink()
        else sorted(p for p in top.rglob("*") if not p.is_dir())
        if top.exists()
        else []
    )
    for path in paths:
        name = path.relative_to(ROOT).as_posix()
        if path.is_symlink():
            print(f"link {os.readlink(path)}  {name}")
        else:
            print(f"{hashlib.sha256(path.read_bytes()).hexdigest()}  {name}")
