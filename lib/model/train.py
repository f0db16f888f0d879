"""Training candidates on the processed Parquet features: XGBoost (``hist``) and a Keras MLP fed by ``tf.data``.

Both are fit on the train window and tuned (early stopping) on the validation window; neither ever
sees the test window. Class imbalance is handled the same way for both through ``POS_WEIGHT``:
``"sqrt"`` weights each fraud by sqrt(genuine/fraud) (enough to make the rare class matter without
the distorted probabilities of full balancing), ``"balanced"`` by genuine/fraud, ``"none"`` by 1,
or a number.
"""

import itertools
import json
import math
import os
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import xgboost as xgb

from lib import atomic
from lib.data.processed import read_manifest, split_files
from lib.errors import ParameterError
from lib.features import feature_names
from lib.hashing import content_sha256

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


def load_matrix(processed: str | Path, split: str, feature_set: str = "full") -> SplitMatrix:
    """Read one split's features and labels (columns only, no pandas) as a float32 matrix."""
    names = feature_names(feature_set)
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


def window_table(windows: list[SplitMatrix]):
    """Rows, frauds and fraud rate of each window, as a small table."""
    import pandas as pd

    rows = [
        {"split": m.split, "rows": len(m.y), "frauds": m.frauds, "fraud rate %": 100 * m.frauds / len(m.y)}
        for m in windows
    ]
    return pd.DataFrame(rows).set_index("split")


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


def positive_weight(policy: str | float, y: np.ndarray) -> float:
    """The weight of one fraud relative to one genuine transaction under ``POS_WEIGHT``."""
    frauds = int(y.sum())
    if frauds == 0:
        raise ParameterError("the train window has no frauds; widen TRAIN_END_STEP or use more ROWS")
    ratio = (len(y) - frauds) / frauds
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
    model: object
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
    """Gradient-boosted trees (``hist``), stopped early on validation AUPRC."""
    require_frauds(train)
    require_frauds(validation)
    params = {
        "objective": "binary:logistic",
        "tree_method": "hist",
        "eval_metric": ["logloss", "aucpr"],  # the last one drives early stopping
        "learning_rate": learning_rate,
        "max_depth": max_depth,
        "min_child_weight": 1.0,
        "subsample": 0.8,
        "colsample_bytree": 0.8,
        "max_bin": 256,
        "scale_pos_weight": positive_weight(pos_weight, train.y),
        "seed": seed,
        "nthread": threads or os.cpu_count(),
    }
    began = time.perf_counter()
    dtrain = xgb.QuantileDMatrix(train.X, label=train.y, feature_names=list(train.features))
    dvalid = xgb.QuantileDMatrix(validation.X, label=validation.y, ref=dtrain, feature_names=list(train.features))
    evals: dict = {}
    booster = xgb.train(
        params,
        dtrain,
        num_boost_round=max_rounds,
        evals=[(dtrain, "train"), (dvalid, "validation")],
        early_stopping_rounds=early_stopping,
        evals_result=evals,
        verbose_eval=False,
    )
    seconds = time.perf_counter() - began
    best = booster.best_iteration
    kept = booster[: best + 1]  # the trees early stopping chose, nothing after
    history = {f"{split}_{metric}": values for split, metrics in evals.items() for metric, values in metrics.items()}
    return Candidate(
        f"xgboost_{train.feature_set}",
        "xgboost",
        train.feature_set,
        {**params, "eval_metric": ",".join(params["eval_metric"]), "max_rounds": max_rounds, "pos_weight": pos_weight},
        kept,
        history,
        best,
        _auprc(kept.inplace_predict(validation.X), validation.y),
        round(seconds, 2),
    )


def parquet_dataset(
    processed: str | Path,
    split: str,
    feature_set: str,
    batch_size: int,
    seed: int | None = None,
    chunk_rows: int = 262_144,
):
    """A ``tf.data`` pipeline streaming (features, label) batches from the split's Parquet files.

    With a ``seed`` it shuffles, differently each epoch: the order of files, then the rows inside
    each chunk of ``chunk_rows`` read from them. Memory stays at one chunk whatever the data size.
    """
    import tensorflow as tf

    files = split_files(processed, split)
    names = list(feature_names(feature_set))
    epochs = itertools.count()

    def batches() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        rng = np.random.default_rng([seed, next(epochs)]) if seed is not None else None
        order = rng.permutation(len(files)) if rng is not None else range(len(files))
        for index in order:
            for chunk in pq.ParquetFile(files[index]).iter_batches(chunk_rows, columns=[*names, LABEL]):
                X = np.column_stack([chunk.column(n).to_numpy() for n in names]).astype(np.float32)
                y = chunk.column(LABEL).to_numpy().astype(np.float32)
                if rng is not None:
                    permutation = rng.permutation(len(y))
                    X, y = X[permutation], y[permutation]
                for start in range(0, len(y), batch_size):
                    yield X[start : start + batch_size], y[start : start + batch_size]

    signature = (tf.TensorSpec((None, len(names)), tf.float32), tf.TensorSpec((None,), tf.float32))
    return tf.data.Dataset.from_generator(batches, output_signature=signature).prefetch(tf.data.AUTOTUNE)


def fit_mlp(
    processed: str | Path,
    train: SplitMatrix,
    validation: SplitMatrix,
    *,
    seed: int,
    pos_weight: str | float = "sqrt",
    epochs: int = 10,
    batch_size: int = 2048,
    patience: int = 3,
    hidden_units: tuple[int, ...] = (64, 32),
    learning_rate: float = 1e-3,
) -> Candidate:
    """A Keras MLP (normalisation inside the model), class-weighted, stopped early on validation AUPRC."""
    keras = _keras()
    require_frauds(train)
    require_frauds(validation)
    keras.utils.set_random_seed(seed)
    weight = positive_weight(pos_weight, train.y)
    train_ds = parquet_dataset(processed, "train", train.feature_set, batch_size, seed=seed)
    valid_ds = parquet_dataset(processed, "validation", train.feature_set, 65_536)

    normalise = keras.layers.Normalization(name="normalise")
    normalise.adapt(train.X)
    layers = [keras.Input((len(train.features),), name="features"), normalise]
    for units in hidden_units:
        layers += [keras.layers.Dense(units, activation="relu"), keras.layers.Dropout(0.1, seed=seed)]
    model = keras.Sequential([*layers, keras.layers.Dense(1, activation="sigmoid")], name=f"mlp_{train.feature_set}")
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss="binary_crossentropy",
        metrics=[keras.metrics.AUC(curve="PR", num_thresholds=2000, name="auprc")],
    )
    stop = keras.callbacks.EarlyStopping(monitor="val_auprc", mode="max", patience=patience, restore_best_weights=True)
    began = time.perf_counter()
    with warnings.catch_warnings():  # a generator-fed dataset has no known length: Keras warns at each epoch's end
        warnings.filterwarnings("ignore", message=".*(ran out of data|shuffle=True).*")
        fitted = model.fit(
            train_ds,
            validation_data=valid_ds,
            epochs=epochs,
            class_weight={0: 1.0, 1: weight},
            callbacks=[stop],
            verbose=0,
        )
    seconds = time.perf_counter() - began
    history = {
        k.replace("val_", "validation_") if k.startswith("val_") else f"train_{k}": v for k, v in fitted.history.items()
    }
    best = int(np.argmax(history["validation_auprc"]))
    params = {
        "hidden_units": ",".join(map(str, hidden_units)),
        "epochs": epochs,
        "batch_size": batch_size,
        "learning_rate": learning_rate,
        "patience": patience,
        "class_weight_fraud": weight,
        "pos_weight": pos_weight,
        "seed": seed,
    }
    candidate = Candidate(
        f"keras_mlp_{train.feature_set}",
        "keras",
        train.feature_set,
        params,
        model,
        {k: [float(x) for x in v] for k, v in history.items()},
        best,
        train_seconds=round(seconds, 2),
    )
    candidate.validation_auprc = _auprc(candidate.predict(validation.X), validation.y)
    return candidate


def _auprc(probabilities: np.ndarray, y: np.ndarray) -> float:
    """Validation AUPRC, computed the same way for every candidate (average precision)."""
    from sklearn.metrics import average_precision_score

    return float(average_precision_score(y, probabilities))


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
    return _keras().saving.load_model(path, safe_mode=True)


def _keras():
    """Keras, imported on first use (TensorFlow takes seconds to import) without TF's C++ log noise."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
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
