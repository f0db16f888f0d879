"""How closely a transaction file matches real PaySim: type mix, amounts, fraud and balance signatures."""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from lib.data.acquire import read_batches
from lib.schema import TRANSACTION_TYPES
from lib.data.simulate import FULL_ROWS, PUBLISHED_FRAUDS, PUBLISHED_TYPE_COUNTS
from lib.units import ChangePct, Count, Unit

QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9, 0.99)
_COLUMNS = ["step", "type", "amount", "oldbalanceOrg", "newbalanceOrig", "oldbalanceDest", "newbalanceDest", "isFraud"]
_CENT = 0.005

SIGNATURES = {
    "fraud_whole_balance": "fraud: amount == oldbalanceOrg and newbalanceOrig == 0",
    "fraud_dest_unchanged_zero": "fraud: oldbalanceDest == newbalanceDest == 0, amount > 0",
    "genuine_tc_dest_unchanged_zero": "genuine TRANSFER/CASH_OUT: oldbalanceDest == newbalanceDest == 0, amount > 0",
    "genuine_tc_zero_origin": "genuine TRANSFER/CASH_OUT: oldbalanceOrg == 0",
    "genuine_tc_origin_error": "genuine TRANSFER/CASH_OUT: newbalanceOrig + amount - oldbalanceOrg != 0",
}


def load_columns(path: str | Path, max_rows: int = 0) -> dict[str, np.ndarray]:
    """The columns fidelity needs as NumPy arrays (no pandas frame of the whole file).

    ``max_rows > 0`` reads a sample of at most that many rows from Parquet (a file or a folder): the
    first rows of evenly spaced row groups, so every part of the month is in it and memory stays
    bounded whatever the size of the data and of its row groups.
    """
    path = str(path)
    if path.endswith(".parquet") or Path(path).is_dir():
        import pyarrow.dataset as ds

        groups = [g for fragment in ds.dataset(path, format="parquet").get_fragments() for g in fragment.split_by_row_group()]
        sizes = np.array([g.metadata.num_rows for g in groups])
        if not max_rows or sizes.sum() <= max_rows:
            table = pa.concat_tables(g.to_table(columns=_COLUMNS) for g in groups)
        else:
            picked = np.unique(np.linspace(0, len(groups) - 1, min(len(groups), 64)).round().astype(int))
            share = max_rows // len(picked)
            table = pa.Table.from_batches([_head(groups[i], share) for i in picked])
    else:
        table = pa.Table.from_batches(list(read_batches(path))).select(_COLUMNS)
    return {c: table.column(c).to_numpy(zero_copy_only=False) for c in _COLUMNS}


def _head(group, rows: int) -> pa.RecordBatch:
    """The first ``rows`` rows of a one-row-group fragment, decoding no more than that."""
    import pyarrow.parquet as pq

    with pq.ParquetFile(group.path, filesystem=group.filesystem) as parquet:
        batches = parquet.iter_batches(batch_size=rows, row_groups=[group.row_groups[0].id], columns=_COLUMNS)
        return next(batches)


def signatures(cols: dict[str, np.ndarray]) -> dict[str, float]:
    """Shares (0..1) of the balance signatures listed in the data README."""
    fraud = cols["isFraud"] == 1
    tc = np.isin(cols["type"], ["TRANSFER", "CASH_OUT"]) & ~fraud
    amount, old_o, new_o = cols["amount"], cols["oldbalanceOrg"], cols["newbalanceOrig"]
    dest_zero = (cols["oldbalanceDest"] == 0) & (cols["newbalanceDest"] == 0) & (amount > 0)

    def share(mask: np.ndarray, within: np.ndarray) -> float:
        return float(mask[within].mean()) if within.any() else float("nan")

    return {
        "fraud_whole_balance": share((np.abs(amount - old_o) < _CENT) & (new_o == 0), fraud),
        "fraud_dest_unchanged_zero": share(dest_zero, fraud),
        "genuine_tc_dest_unchanged_zero": share(dest_zero, tc),
        "genuine_tc_zero_origin": share(old_o == 0, tc),
        "genuine_tc_origin_error": share(np.abs(new_o + amount - old_o) > _CENT, tc),
    }


FIRST_HOURS = 8  # the real sample's steps: recurrence is compared over the same hours
RECURRENCE = {
    "genuine_tc_dest_recurs": "genuine TRANSFER/CASH_OUT: its destination has more than one row",
    "fraud_dest_recurs": "fraud: its destination has more than one row",
    "fraud_mule_in_genuine": "fraud TRANSFER: its destination (the mule) also receives genuine rows",
    "dest_seen_earlier": "C-destination rows of steps 2-8 whose account received at an earlier step",
    "fraud_cash_out_paired": "fraud CASH_OUT: a fraud TRANSFER of the same amount in the same step",
    "sender_recurs": "rows whose sender (nameOrig) has another row",
}
RECURRENCE_WITHIN_PP = 10  # the simulator's recurrence signatures stay this close to the real rows (tested)
RECURRENCE_MIN_ROWS = 30  # fewer rows say nothing (the default 200,000-row simulation has no fraud in steps 1-8)


def first_hours(path: str | Path) -> dict[str, np.ndarray]:
    """Steps 1-8 of a transaction file (CSV, or Parquet as a file or a Spark folder), with account names: what
    ``recurrence`` compares. Parquet is filtered as it is read (only the first steps' row groups are decoded)."""
    import pyarrow.compute as pc

    columns = [*_COLUMNS, "nameOrig", "nameDest"]
    path = str(path)
    if path.endswith(".parquet") or Path(path).is_dir():
        import pyarrow.dataset as ds

        table = ds.dataset(path, format="parquet").to_table(columns=columns, filter=ds.field("step") <= FIRST_HOURS)
    else:
        batches = (b.filter(pc.less_equal(b.column("step"), FIRST_HOURS)).select(columns) for b in read_batches(path))
        table = pa.Table.from_batches(list(batches))
    return {c: table.column(c).to_numpy(zero_copy_only=False) for c in columns}


def recurrence(cols: dict[str, np.ndarray]) -> dict[str, tuple[float, int]]:
    """Shares (0..1) of how accounts recur over steps 1-8 (``first_hours``), each with the rows it is measured
    over: what per-account memory can learn from (issue 33). Rows of one step count as recurring too;
    ``dest_seen_earlier`` needs an earlier step."""
    first = cols["step"] <= FIRST_HOURS
    cols = {k: v[first] for k, v in cols.items()}
    fraud, dest, kind = cols["isFraud"] == 1, cols["nameDest"].astype(str), cols["type"]
    names, index, counts = np.unique(dest, return_inverse=True, return_counts=True)
    recurs = counts[index] > 1
    tc = np.isin(kind, ["TRANSFER", "CASH_OUT"])
    customer = ~np.char.startswith(dest, "M")
    born = np.full(len(names), np.iinfo(np.int64).max)
    np.minimum.at(born, index, cols["step"].astype(np.int64))
    later = customer & (cols["step"] >= 2)
    mule = fraud & (kind == "TRANSFER")
    transfers = set(zip(cols["step"][mule].tolist(), cols["amount"][mule].tolist(), strict=True))
    cash_outs = fraud & (kind == "CASH_OUT")
    pairs = zip(cols["step"][cash_outs].tolist(), cols["amount"][cash_outs].tolist(), strict=True)
    paired = np.array([pair in transfers for pair in pairs], dtype=bool)
    _, sender_index, sender_counts = np.unique(cols["nameOrig"].astype(str), return_inverse=True, return_counts=True)

    def share(mask: np.ndarray, within: np.ndarray) -> tuple[float, int]:
        return (float(mask[within].mean()) if within.any() else float("nan")), int(within.sum())

    return {
        "genuine_tc_dest_recurs": share(recurs, tc & ~fraud),
        "fraud_dest_recurs": share(recurs, fraud),
        "fraud_mule_in_genuine": share(np.isin(dest, dest[~fraud]), mule),
        "dest_seen_earlier": share(born[index] < cols["step"], later),
        "fraud_cash_out_paired": share(paired, np.ones(len(paired), bool)),
        "sender_recurs": share(sender_counts[sender_index] > 1, np.ones(len(dest), bool)),
    }


def recurrence_table(cols: dict[str, np.ndarray], sample: dict[str, np.ndarray]) -> pd.DataFrame:
    """Each recurrence signature in percent over steps 1-8, this data against the real rows, and the gap;
    ``within``: the gap is at most ``RECURRENCE_WITHIN_PP`` points, or "too few rows" under ``RECURRENCE_MIN_ROWS``."""
    ours, real = recurrence(cols), recurrence(sample)
    table = pd.DataFrame(
        {
            "signature": [RECURRENCE[k] for k in RECURRENCE],
            "this_data_pct": [100 * ours[k][0] for k in RECURRENCE],
            "rows": [ours[k][1] for k in RECURRENCE],
            "real_sample_pct": [100 * real[k][0] for k in RECURRENCE],
            "real_rows": [real[k][1] for k in RECURRENCE],
        },
        index=list(RECURRENCE),
    )
    table["gap_pp"] = table["this_data_pct"] - table["real_sample_pct"]
    table["within"] = [
        "too few rows" if n < RECURRENCE_MIN_ROWS else f"{'yes' if abs(gap) <= RECURRENCE_WITHIN_PP else 'NO'}"
        for n, gap in zip(table["rows"], table["gap_pp"], strict=True)
    ]
    table.attrs["units"] = {
        "this_data_pct": Unit.PCT, "rows": Unit.COUNT, "real_sample_pct": Unit.PCT, "real_rows": Unit.COUNT, "gap_pp": Unit.PP,
    }  # fmt: skip
    return table


def type_table(cols: dict[str, np.ndarray], sample: dict[str, np.ndarray] | None = None) -> pd.DataFrame:
    """Type counts and shares next to the published full-data totals (and the real sample)."""
    types = pd.Series(cols["type"])
    frauds = pd.Series(cols["type"][cols["isFraud"] == 1]).value_counts()
    rows = len(types)
    table = (
        pd.DataFrame(
            {
                "rows": types.value_counts(),
                "published_rows_scaled": pd.Series(PUBLISHED_TYPE_COUNTS) * rows / FULL_ROWS,
                "frauds": frauds,
            }
        )
        .reindex(list(TRANSACTION_TYPES))
        .fillna(0)
    )
    table["rows_vs_published_pct"] = 100 * (table["rows"] / table["published_rows_scaled"] - 1)
    table["fraud_rate_pct"] = 100 * table["frauds"] / table["rows"]
    if sample is not None:
        real = pd.Series(sample["type"])
        table["real_sample_share_pct"] = 100 * real.value_counts(normalize=True)
        real_fraud = pd.Series(sample["type"][sample["isFraud"] == 1]).value_counts()
        table["real_sample_fraud_rate_pct"] = 100 * real_fraud / real.value_counts()
    table.loc["total"] = table.sum(numeric_only=True)
    table.loc["total", "published_rows_scaled"] = rows * sum(PUBLISHED_TYPE_COUNTS.values()) / FULL_ROWS
    table.loc["total", "rows_vs_published_pct"] = 100 * (
        table.loc["total", "rows"] / table.loc["total", "published_rows_scaled"] - 1
    )
    table.loc["total", "fraud_rate_pct"] = 100 * table.loc["total", "frauds"] / rows
    table = table.fillna(0)
    counts = dict.fromkeys(("rows", "published_rows_scaled", "frauds"), Unit.COUNT)
    shares = dict.fromkeys(("fraud_rate_pct", "real_sample_share_pct", "real_sample_fraud_rate_pct"), Unit.PCT)
    table.attrs["units"] = {**counts, **shares, "rows_vs_published_pct": Unit.CHANGE_PCT}
    return table


@dataclass(frozen=True)
class FraudTotals:
    """Frauds against the published rate of the full data set, scaled to this many rows."""

    rows: Count
    frauds: Count
    frauds_expected: float
    frauds_vs_expected_pct: ChangePct


def fraud_totals(rows: int, frauds: int) -> FraudTotals:
    expected = PUBLISHED_FRAUDS * rows / FULL_ROWS
    return FraudTotals(rows, frauds, expected, 100 * (frauds / expected - 1))


def amount_quantiles(cols: dict[str, np.ndarray], sample: dict[str, np.ndarray]) -> pd.DataFrame:
    """Amount quantiles of genuine rows per type: this data vs the real sample."""
    frames = []
    for name, c in (("this data", cols), ("real sample", sample)):
        frame = pd.DataFrame({"type": c["type"], "amount": c["amount"]})[c["isFraud"] == 0]
        q = frame.groupby("type")["amount"].quantile(list(QUANTILES)).unstack()
        q.columns = [f"q{int(p * 100)}" for p in QUANTILES]
        frames.append(q.assign(source=name).set_index("source", append=True))
    table = pd.concat(frames).sort_index().round(0)
    table.attrs["units"] = dict.fromkeys(table.columns, Unit.MONEY)
    return table


def signature_table(cols: dict[str, np.ndarray], sample: dict[str, np.ndarray]) -> pd.DataFrame:
    """Each signature in percent for this data and the real sample, and the gap in percentage points."""
    ours, real = signatures(cols), signatures(sample)
    table = pd.DataFrame(
        {
            "signature": [SIGNATURES[k] for k in SIGNATURES],
            "this_data_pct": [100 * ours[k] for k in SIGNATURES],
            "real_sample_pct": [100 * real[k] for k in SIGNATURES],
        },
        index=list(SIGNATURES),
    )
    table["gap_pp"] = table["this_data_pct"] - table["real_sample_pct"]
    table["within_5pp"] = table["gap_pp"].abs() <= 5
    table.attrs["units"] = {"this_data_pct": Unit.PCT, "real_sample_pct": Unit.PCT, "gap_pp": Unit.PP}
    return table


def plot_volume(cols: dict[str, np.ndarray], sample: dict[str, np.ndarray]):
    """Transactions and frauds per step (log scale), with the real sample's first 8 hours."""
    import matplotlib.pyplot as plt

    steps = np.arange(1, 744)
    volume = np.bincount(cols["step"], minlength=744)[1:744]
    frauds = np.bincount(cols["step"][cols["isFraud"] == 1], minlength=744)[1:744]
    real = np.bincount(sample["step"], minlength=744)[1:744]
    fig, ax = plt.subplots(figsize=(11, 3.5))
    ax.plot(steps, np.maximum(volume, 0.8), lw=0.8, label="all transactions")
    ax.plot(steps, np.maximum(frauds, 0.8), lw=0.8, label="frauds")
    ax.plot(
        steps[:8], real[:8] * len(cols["step"]) / FULL_ROWS, "k.", label="real data, steps 1-8 (scaled to this size)"
    )
    ax.set_yscale("log")
    ax.set_xlabel("step (hour)")
    ax.set_ylabel("transactions per step")
    ax.legend(loc="upper right")
    fig.tight_layout()
    return fig


def plot_amounts(cols: dict[str, np.ndarray], sample: dict[str, np.ndarray]):
    """Amount distributions per type (log10), this data vs the real sample; frauds separately."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(TRANSACTION_TYPES) + 1, figsize=(15, 3), sharey=False)
    bins = np.linspace(0, 8, 41)
    for ax, t in zip(axes, TRANSACTION_TYPES, strict=False):
        for name, c, style in (("this data", cols, "step"), ("real sample", sample, "stepfilled")):
            mask = (c["type"] == t) & (c["isFraud"] == 0)
            ax.hist(np.log10(c["amount"][mask] + 1), bins=bins, density=True, histtype=style, alpha=0.5, label=name)
        ax.set_title(t)
        ax.set_xlabel("log10 amount")
    ax = axes[-1]
    for name, c, style in (("this data", cols, "step"), ("real sample", sample, "stepfilled")):
        ax.hist(
            np.log10(c["amount"][c["isFraud"] == 1] + 1), bins=bins, density=True, histtype=style, alpha=0.5, label=name
        )
    ax.set_title("fraud (all types)")
    ax.set_xlabel("log10 amount")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    return fig
