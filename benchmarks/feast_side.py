"""Feast's half of ``feast_vs_direct.py``: runs in the Feast environment (``make feast-env``), imports nothing of ``lib``.

Given the entity vectors the direct store computed (two Parquet files, one row per destination and per
origin) and the transactions to read, it declares part 1's entity features in a Feast repository on the
same Redis (Feast's Redis online store, one push source and one feature view per entity), then measures:
pushing the vectors (``FeatureStore.push``, ``PushMode.ONLINE``, 2,000 rows a call), reading one
transaction's vector (``get_online_features``, both entities, all features) and 2,000-row batches, and
checks that Feast gives back what was pushed. Prints one JSON object.

    .venv-feast/bin/python benchmarks/feast_side.py --redis 127.0.0.1:6379 --db 1 --folder DIR
"""

import argparse
import json
import sys
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
from feast import Entity, FeatureStore, FeatureView, Field, FileSource, PushSource, ValueType
from feast.data_source import PushMode
from feast.types import Float64

ENTITIES = {"nameDest": "dest", "nameOrig": "orig"}
BATCH = 2_000


def repository(folder: Path, redis: str, db: int, columns: dict[str, list[str]]) -> tuple[FeatureStore, list]:
    (folder / "feature_store.yaml").write_text(
        "project: fraud\nregistry: registry.db\nprovider: local\nentity_key_serialization_version: 3\n"
        f'online_store:\n  type: redis\n  connection_string: "{redis},db={db}"\noffline_store:\n  type: file\n'
    )
    objects: list = []
    for key, short in ENTITIES.items():
        entity = Entity(name=short, join_keys=[key], value_type=ValueType.STRING)
        batch = FileSource(name=f"{short}_batch", path=str(folder / f"{short}.parquet"), timestamp_field="at")
        push = PushSource(name=f"{short}_push", batch_source=batch)
        view = FeatureView(name=f"{short}_features", entities=[entity], ttl=timedelta(days=40), online=True,
                           schema=[Field(name=c, dtype=Float64) for c in columns[key]], source=push)  # fmt: skip
        objects += [entity, push, view]
    store = FeatureStore(repo_path=str(folder))
    store.apply(objects)
    return store, [f"{ENTITIES[k]}_features:{c}" for k in ENTITIES for c in columns[k]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--redis", required=True, help="host:port")
    parser.add_argument("--db", type=int, default=1)
    parser.add_argument("--folder", type=Path, required=True, help="holds dest.parquet, orig.parquet, reads.parquet")
    parser.add_argument("--seconds", type=float, default=3.0, help="of batch reads")
    args = parser.parse_args()
    frames = {k: pd.read_parquet(args.folder / f"{ENTITIES[k]}.parquet") for k in ENTITIES}
    columns = {k: [c for c in f.columns if c not in (k, "at")] for k, f in frames.items()}
    store, refs = repository(args.folder, args.redis, args.db, columns)

    began = time.perf_counter()
    for key, frame in frames.items():
        for start in range(0, len(frame), BATCH):
            store.push(f"{ENTITIES[key]}_push", frame.iloc[start : start + BATCH], to=PushMode.ONLINE)
    pushed = sum(len(f) for f in frames.values())
    push_rate = pushed / (time.perf_counter() - began)

    reads = pd.read_parquet(args.folder / "reads.parquet")
    rows = reads[list(ENTITIES)].to_dict("records")
    latencies, served = [], []
    for row in rows:
        start = time.perf_counter()
        answer = store.get_online_features(features=refs, entity_rows=[row]).to_dict()
        latencies.append(time.perf_counter() - start)
        served.append([answer[r.split(":")[1]][0] for r in refs])
    expected = reads[[r.split(":")[1] for r in refs]].to_numpy(np.float64)
    got = np.asarray(served, np.float64)  # a missing value (None) becomes nan
    equal = int(np.isclose(got, expected, rtol=0, atol=1e-9, equal_nan=True).all(axis=1).sum())
    if equal < len(rows):
        bad = int(np.flatnonzero(~np.isclose(got, expected, rtol=0, atol=1e-9, equal_nan=True).all(axis=1))[0])
        print(
            f"first unequal read: {rows[bad]} served {got[bad].tolist()} expected {expected[bad].tolist()}",
            file=sys.stderr,
        )

    batch = rows[:BATCH]
    start, rounds = time.perf_counter(), 0
    while time.perf_counter() - start < args.seconds:
        store.get_online_features(features=refs, entity_rows=batch).to_dict()
        rounds += 1
    print(json.dumps({
        "feast": __import__("feast").__version__, "features": len(refs), "pushed_rows": pushed,
        "push_rows_per_s": push_rate, "p50_ms": float(np.percentile(latencies, 50)) * 1000,
        "p99_ms": float(np.percentile(latencies, 99)) * 1000, "reads": len(rows), "equal": equal,
        "batch_rows_per_s": rounds * len(batch) / (time.perf_counter() - start),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
