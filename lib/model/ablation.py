"""Does per-account memory help? XGBoost with and without the entity features (issue 33), judged as 05
judges candidates: on the test window, on the real PaySim rows and in prequential folds.

Each feature set is judged twice, with the challenger's parameters: alone, and "+entity" with
``ENTITY_FEATURES`` added. They
are evaluated here and not registered: a model that needs entity features can serve only where the same
values exist at decision time, which is issue 34's online store. Until then the champion is a row-feature
model, as the rule of the issue wants on a tie (the candidate that needs fewer after-the-fact inputs).

* **Test window**: trained on the train window, stopped early on validation, threshold by cost on
  validation; the scorecard of ``lib.model.evaluate``.
* **Real rows**: the real sample's 8 hours, entity features computed from the file itself
  (``lib.data.entity.entity_columns``): history starts at its first step, so a destination is "never seen"
  far more often than a month into the data, and the figure says what memory gives a new deployment.
* **Prequential**: folds moving forward in time, each trained on every step before its test window less a
  gap of the label delay (the labels a deployment would have), a fixed number of trees (the test-window
  model's), AUPRC per fold, then the mean and spread (as the Fraud Detection Handbook evaluates).
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import xgboost as xgb

from lib import features
from lib.data.acquire import read_batches
from lib.data.entity import entity_columns
from lib.data.processed import SPLITS, window
from lib.model import evaluate
from lib.model.train import SplitMatrix, booster_params, fit_xgboost, load_matrix, positive_weight
from lib.quality import average_precision
from lib.units import Unit

ENTITY = tuple(e.name for e in features.ENTITY_FEATURES)
FOLDS, FOLD_STEPS = 4, 72  # prequential: 4 test windows of 3 days each


def variants(feature_sets: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
    """Two variants of each feature set: its row features alone, and with the entity features."""
    out: dict[str, tuple[str, ...]] = {}
    for feature_set in feature_sets:
        base = features.feature_names(feature_set)
        out |= {feature_set: base, f"{feature_set}+entity": (*base, *ENTITY)}
    return out


@dataclass(frozen=True)
class Settings:
    """What both variants share: the challenger's training parameters and 05's decision rules."""

    seed: int
    pos_weight: str | float
    max_rounds: int
    learning_rate: float
    max_depth: int
    review_cost: float
    target_fpr: float
    alert_budget: int
    label_delay: int
    early_stopping: int = 30  # 04's XGB_EARLY_STOPPING_ROUNDS default (not among a run's logged parameters)

    @classmethod
    def of(cls, logged: dict[str, str], label_delay: int, **rules) -> "Settings":
        """The settings of an XGBoost candidate from its MLflow run's parameters (``logged``), and 05's rules."""
        return cls(int(logged["seed"]), logged["pos_weight"], int(logged["max_rounds"]), float(logged["learning_rate"]),
                   int(logged["max_depth"]), label_delay=label_delay, **rules)  # fmt: skip


def _card(model, validation: SplitMatrix, judged: SplitMatrix, s: Settings) -> evaluate.Scorecard:
    chosen = evaluate.cost_threshold(
        model.inplace_predict(validation.X), validation.y, validation.amount, s.review_cost
    )
    return evaluate.evaluate(
        model.inplace_predict(judged.X), judged.y, judged.amount, judged.step, judged.flagged,
        threshold=chosen.threshold, review_cost=s.review_cost, target_fpr=s.target_fpr, alert_budget=s.alert_budget,
    )  # fmt: skip


def _fit(train: SplitMatrix, validation: SplitMatrix, s: Settings):
    return fit_xgboost(
        train, validation, seed=s.seed, pos_weight=s.pos_weight, max_rounds=s.max_rounds,
        early_stopping=s.early_stopping, learning_rate=s.learning_rate, max_depth=s.max_depth,
    ).model  # fmt: skip


def real_rows(path: str | Path, columns: tuple[str, ...], label_delay: int) -> SplitMatrix:
    """The real sample as one window: row features by the spec, entity features from the file itself."""
    table = pa.Table.from_batches(list(read_batches(str(path))))
    raw = {c: table.column(c).to_numpy(zero_copy_only=False) for c in table.column_names}
    values = {**dict(zip(features.FEATURE_SETS["full"], features.compute(raw).T, strict=True)),
              **entity_columns(raw, label_delay)}  # fmt: skip
    X = np.column_stack([np.asarray(values[c], dtype=np.float32) for c in columns])
    y = raw["isFraud"].astype(np.int8)
    return SplitMatrix("real", "", columns, X, y, raw["step"], raw["amount"], raw["isFlaggedFraud"].astype(np.int8))


def ablation(
    processed: str | Path, feature_sets: tuple[str, ...], reference: str | Path, s: Settings
) -> tuple[pd.DataFrame, dict]:
    """The scorecards of every variant on the test window and on the real rows, as a table (rows: window and
    variant), and the boosters (for the prequential folds' tree counts)."""
    rows, models = [], {}
    for name, columns in variants(feature_sets).items():
        windows = {split: load_matrix(processed, split, name, columns) for split in SPLITS}
        models[name] = model = _fit(windows["train"], windows["validation"], s)
        for label, judged in (
            ("test window", windows["test"]),
            ("real rows", real_rows(reference, columns, s.label_delay)),
        ):
            card = _card(model, windows["validation"], judged, s)
            rows.append({"window": label, "variant": name, "auprc": card.auprc,
                         "recall_at_target_fpr": card.recall_at_target_fpr, "precision_at_budget": card.precision_at_budget,
                         "saved_vs_no_model": card.saved_vs_no_model, "frauds": int(judged.y.sum()), "rows": len(judged.y)})  # fmt: skip
    table = pd.DataFrame(rows).set_index(["window", "variant"])
    table.attrs["units"] = {"auprc": Unit.SCORE, "recall_at_target_fpr": Unit.RATE, "precision_at_budget": Unit.RATE,
                            "saved_vs_no_model": Unit.MONEY, "frauds": Unit.COUNT, "rows": Unit.COUNT}  # fmt: skip
    return table, models


def prequential(processed: str | Path, feature_sets: tuple[str, ...], models: dict, s: Settings) -> pd.DataFrame:
    """AUPRC of every variant in ``FOLDS`` test windows of ``FOLD_STEPS`` steps from the validation window's first
    step on, each trained on the steps before it less a gap of the label delay, with its variant's test-window
    tree count."""
    first_test_step, rows = window(processed, "validation")[0], []
    for name, columns in variants(feature_sets).items():
        parts = [load_matrix(processed, split, name, columns) for split in SPLITS]
        X, y, step = (np.concatenate([getattr(p, k) for p in parts]) for k in ("X", "y", "step"))
        trees = models[name].num_boosted_rounds()
        for fold in range(FOLDS):
            start = first_test_step + fold * FOLD_STEPS
            train, test = step < start - s.label_delay, (step >= start) & (step < start + FOLD_STEPS)
            fold_row = {"variant": name, "fold": fold + 1, "test_steps": f"{start}-{start + FOLD_STEPS - 1}",
                         "frauds": int(y[test].sum())}  # fmt: skip
            if y[train].sum() == 0 or y[test].sum() == 0 or y[test].sum() == test.sum():
                rows.append({**fold_row, "auprc": float("nan")})  # nothing to learn or to find: says so, counts not
                continue
            weight = positive_weight(s.pos_weight, int(y[train].sum()), int(train.sum()))
            params = {**booster_params(s.seed, weight, s.learning_rate, s.max_depth), "nthread": 0}
            booster = xgb.train(params, xgb.QuantileDMatrix(X[train], label=y[train]), num_boost_round=trees)
            rows.append({**fold_row, "auprc": average_precision(y[test], booster.inplace_predict(X[test]))})
    return pd.DataFrame(rows)


def prequential_summary(folds: pd.DataFrame) -> pd.DataFrame:
    """Mean and spread (standard deviation) of the folds' AUPRC per variant; a fold without frauds (NaN) is
    left out (``folds``: those measured)."""
    summary = folds.groupby("variant", sort=False)["auprc"].agg(["mean", "std", "min", "max", "count"])
    summary = summary.rename(columns={"count": "folds"})
    summary.attrs["units"] = {**dict.fromkeys(("mean", "std", "min", "max"), Unit.SCORE), "folds": Unit.COUNT}
    return summary
