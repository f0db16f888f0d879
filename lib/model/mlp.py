"""The Keras MLP candidate, fed by ``tf.data`` straight from the processed Parquet files.

Normalisation lives inside the model, class weights follow ``POS_WEIGHT`` as for XGBoost, and early
stopping restores the epoch with the best validation AUPRC. Training streams the train window from
disk (memory stays at one chunk); ``Normalization.adapt`` and the final validation AUPRC read the
windows ``load_windows`` holds in memory.
"""

import itertools
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from lib.data.processed import split_files
from lib.features import feature_names
from lib.model.train import (
    LABEL,
    Candidate,
    SplitMatrix,
    keras_module,
    positive_weight,
    require_frauds,
)
from lib.quality import average_precision


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
    keras_module()  # TensorFlow comes with it, imported quietly
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
    keras = keras_module()
    require_frauds(train)
    require_frauds(validation)
    keras.utils.set_random_seed(seed)
    weight = positive_weight(pos_weight, train.frauds, len(train.y))
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
    candidate.validation_auprc = average_precision(validation.y, candidate.predict(validation.X))
    return candidate
