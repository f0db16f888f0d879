"""The processed data's layout, as 02_preprocess writes it and everything after reads it (no Spark needed).

``<processed>/split=<train|validation|test>/*.parquet`` hold the kept raw columns, every
feature of the spec and every entity feature; ``<processed>/manifest.json`` says which features, windows and counts.
"""

import json
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq

from lib.errors import DataValidationError, ParameterError
from lib.features import FEATURES
from lib.schema import N_STEPS
from lib.units import Unit

SPLITS = ("train", "validation", "test")
KEPT_COLUMNS = ("step", "amount", "isFraud", "isFlaggedFraud")  # for time-aware, cost-based evaluation
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class SplitWindows:
    """train = steps 1..train_end, validation = train_end+1..validation_end, test = the rest."""

    train_end: int
    validation_end: int

    def __post_init__(self) -> None:
        if not 1 <= self.train_end < self.validation_end < N_STEPS:
            raise ParameterError(
                f"split windows need 1 <= TRAIN_END_STEP ({self.train_end}) < VALIDATION_END_STEP "
                f"({self.validation_end}) < {N_STEPS}, so that each window has steps"
            )

    def as_dict(self) -> dict[str, list[int]]:
        return {
            "train": [1, self.train_end],
            "validation": [self.train_end + 1, self.validation_end],
            "test": [self.validation_end + 1, N_STEPS],
        }


def read_manifest(processed: str | Path) -> dict:
    """``manifest.json`` of a processed folder (features, windows, rows and frauds per split, input hash)."""
    path = Path(processed) / MANIFEST
    if not path.exists():
        raise DataValidationError(f"{path}: no manifest; run 02_preprocess first")
    return json.loads(path.read_text())


def window(processed: str | Path, split: str) -> tuple[int, int]:
    """(first step, last step) of ``split`` as the manifest records it."""
    first, last = read_manifest(processed)["windows"][_known(split)]
    return int(first), int(last)


def _known(split: str) -> str:
    if split not in SPLITS:
        raise ParameterError(f"unknown split {split!r}; choose one of {SPLITS}")
    return split


def window_table(processed: str | Path):
    """Rows, frauds, fraud rate and steps of each window, from the manifest (no data read)."""
    import pandas as pd

    manifest = read_manifest(processed)
    rows = [
        {"split": split, "steps": "-".join(map(str, manifest["windows"][split])), "rows": counts["rows"],
         "frauds": counts["frauds"], "fraud rate": counts["fraud_rate"]}
        for split, counts in manifest["splits"].items()
    ]  # fmt: skip
    table = pd.DataFrame(rows).set_index("split")
    table.attrs["units"] = {"rows": Unit.COUNT, "frauds": Unit.COUNT, "fraud rate": Unit.RATE}
    return table


def split_files(processed: str | Path, split: str) -> list[Path]:
    """The Parquet files of one split, in a stable order."""
    files = sorted((Path(processed) / f"split={_known(split)}").glob("*.parquet"))
    if not files:
        raise ParameterError(f"{processed}: no Parquet files for split {split!r}; run 02_preprocess first")
    return files


def load_split(processed: str | Path, split: str, columns: list[str] | None = None):
    """One split of the processed data as an Arrow table (for training and evaluation)."""
    return pq.read_table(split_files(processed, split), columns=columns)


def class_sample(processed: str | Path, split: str = "train", rows_per_class: int = 50_000, seed: int = 0):
    """A seeded sample of up to ``rows_per_class`` rows of each class of a split (every fraud while there
    are fewer), as pandas, for plots. The label column is streamed twice, one batch at a time, and only
    the chosen rows are read, one row group at a time, so memory follows the sample, not the split."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    files = split_files(processed, split)
    counts = np.zeros(2, dtype=np.int64)
    for labels in _label_batches(files):
        counts += np.bincount(labels, minlength=2)[:2]
    rng = np.random.default_rng(seed)
    chosen = [
        np.sort(rng.choice(n, rows_per_class, replace=False)) if n > rows_per_class else np.arange(n)
        for n in counts
    ]  # the rank of each chosen row among the rows of its class
    picked, seen, start = [], np.zeros(2, dtype=np.int64), 0
    for labels in _label_batches(files):
        for label in (0, 1):
            rows = np.flatnonzero(labels == label)
            lo, hi = np.searchsorted(chosen[label], [seen[label], seen[label] + len(rows)])
            picked.append(start + rows[chosen[label][lo:hi] - seen[label]])
            seen[label] += len(rows)
        start += len(labels)
    keep, taken, start = np.sort(np.concatenate(picked)), [], 0
    for file in files:
        parquet = pq.ParquetFile(file)
        for group in range(parquet.num_row_groups):
            group_rows = parquet.metadata.row_group(group).num_rows
            lo, hi = np.searchsorted(keep, [start, start + group_rows])
            if hi > lo:
                taken.append(parquet.read_row_group(group).take(keep[lo:hi] - start))
            start += group_rows
    return (pa.concat_tables(taken) if taken else pq.read_schema(files[0]).empty_table()).to_pandas()


def _label_batches(files: list[Path]):
    """``isFraud`` of ``files``, in row order, as NumPy arrays of at most 1M rows."""
    import pyarrow.parquet as pq

    for file in files:
        for batch in pq.ParquetFile(file).iter_batches(batch_size=1 << 20, columns=["isFraud"]):
            yield batch.column(0).to_numpy()


def plot_feature_distributions(sample, names: list[str] | None = None):
    """Histograms of features, fraud vs genuine (densities, so the rare class is visible)."""
    import matplotlib.pyplot as plt
    import numpy as np

    names = names or [f.name for f in FEATURES if f.dtype == "double"] + ["hour_of_day", "day"]
    cols = 4
    rows = -(-len(names) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 2.6 * rows))
    for ax, name in zip(axes.flat, names, strict=False):
        values = sample[name].to_numpy(dtype=float)
        clipped = np.clip(values, *np.nanpercentile(values, [0.5, 99.5]))
        for label, title in ((0, "genuine"), (1, "fraud")):
            ax.hist(clipped[sample["isFraud"].to_numpy() == label], bins=40, density=True, alpha=0.5, label=title)
        ax.set_title(name, fontsize=9)
    for ax in list(axes.flat)[len(names) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=8)
    fig.tight_layout()
    return fig
