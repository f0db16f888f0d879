"""Content hashes of data files and folders: what the step cache, manifests and lineage tags record."""

import hashlib
from pathlib import Path


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes, read in 8 MB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(8 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def content_sha256(path: Path) -> str:
    """sha256 of a file's bytes, or of a folder's files (relative names and bytes, hidden files skipped).

    Byte hashes are stable because every Parquet writer of the project is deterministic: pyarrow, and
    Spark with v2 data pages (v1 pages list their encodings in a per-JVM order, apache/parquet-java#3215).
    """
    path = Path(path)
    if path.is_file():
        return file_sha256(path)
    digest = hashlib.sha256()
    for file in sorted(
        p
        for p in path.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)
    ):
        digest.update(f"{file.relative_to(path).as_posix()}\0{file_sha256(file)}\n".encode())
    return digest.hexdigest()
