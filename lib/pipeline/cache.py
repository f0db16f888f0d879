"""Step cache of the runner: a notebook whose code, parameters and upstream data are unchanged is not run again.

A notebook opts in by recording ``data_outputs`` ({label: {"path", "sha256"}}, not empty). Its cache key hashes
the notebook file, the ``lib`` source, its parameters (plus size and mtime of any parameter that
names an existing file, such as a local SOURCE) and the data outputs of the notebooks before it in
the run. A hit also requires every recorded output to still be there with the same content hash.
"""

import hashlib
import json
from pathlib import Path

from lib import atomic
from lib.config import PROJECT_ROOT, resolve
from lib.hashing import content_sha256


def lib_fingerprint(lib: Path = PROJECT_ROOT / "lib") -> str:
    """Every source file of ``lib`` and its subpackages, by path and content."""
    digest = hashlib.sha256()
    for path in sorted(
        p for p in lib.rglob("*") if p.suffix in (".py", ".properties") and "__pycache__" not in p.parts
    ):
        digest.update(f"{path.relative_to(lib).as_posix()}\0".encode() + path.read_bytes())
    return digest.hexdigest()


def key(notebook: Path, params: dict, upstream: dict) -> str:
    files = {}
    for name, value in params.items():
        if isinstance(value, str) and "://" not in value and resolve(value).is_file():
            stat = resolve(value).stat()
            files[name] = [stat.st_size, stat.st_mtime_ns]
    payload = json.dumps({"params": params, "files": files, "upstream": upstream}, sort_keys=True, default=str)
    digest = hashlib.sha256(Path(notebook).read_bytes() + lib_fingerprint().encode() + payload.encode())
    return digest.hexdigest()[:20]


def upstream_data(outputs: dict) -> dict:
    """The data output hashes recorded so far in a run, by notebook."""
    return {
        nb: {k: v["sha256"] for k, v in o["data_outputs"].items()} for nb, o in outputs.items() if o.get("data_outputs")
    }


def lookup(cache_dir: Path, name: str, cache_key: str) -> dict | None:
    """The cached entry ({"run_id", "outputs"}) if its data outputs are still intact."""
    entry_path = cache_dir / f"{name}-{cache_key}.json"
    if not entry_path.exists():
        return None
    entry = json.loads(entry_path.read_text())
    for output in entry["outputs"].get("data_outputs", {}).values():
        path = resolve(output["path"])
        if not path.exists() or content_sha256(path) != output["sha256"]:
            return None
    return entry


def store(cache_dir: Path, name: str, cache_key: str, run_id: str, outputs: dict) -> None:
    if not outputs.get("data_outputs"):  # a step without data outputs always runs
        return
    atomic.write_text(
        cache_dir / f"{name}-{cache_key}.json", json.dumps({"run_id": run_id, "outputs": outputs}, indent=2)
    )
