"""Content hashes of data files and folders: what the step cache, manifests and lineage tags record."""

import hashlib
from pathlib import Path

import numpy as np


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes, read in 8 MB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(8 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def content_sha256(path: Path) -> str:
    """sha256 of a file's bytes, or of a folder's files (relative names and contents, hidden files skipped).

    Inside a folder, a Parquet file counts by its schema and decoded values, not its bytes: Spark's
    Parquet writer lists column encodings in a different order from one JVM to the next, so equal
    data would otherwise hash differently.
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
        content = _parquet_data_sha256(file) if file.suffix == ".parquet" else file_sha256(file)
        digest.update(f"{file.relative_to(path).as_posix()}\0{content}\n".encode())
    return digest.hexdigest()


def _parquet_data_sha256(path: Path) -> str:
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(path)
    digest = hashlib.sha256(parquet.schema_arrow.remove_metadata().to_string().encode())
    for batch in parquet.iter_batches(batch_size=1 << 20):
        for column in batch.columns:
            values = column.to_numpy(zero_copy_only=False)
            digest.update(
                values.astype(str).tobytes() if values.dtype == object else np.ascontiguousarray(values).tobytes()
            )
    return digest.hexdigest()
