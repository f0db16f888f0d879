"""Alert precision, recall and AUPRC on NumPy alone, the project's one definition of each: training,
evaluation, the registry gate, drift, ``lib score`` and the stream's live window all use these (and
the scoring path needs no scikit-learn). Arguments in scikit-learn's order: labels, then scores."""

import numpy as np


def average_precision(labels: np.ndarray, probabilities: np.ndarray) -> float:
    """AUPRC as average precision (scikit-learn's definition), on NumPy alone."""
    labels = np.asarray(labels, dtype=np.int64)
    if not labels.any():
        return float("nan")
    order = np.argsort(-np.asarray(probabilities, dtype=np.float64), kind="mergesort")
    ranked, scores = labels[order], np.asarray(probabilities, dtype=np.float64)[order]
    last = np.r_[np.flatnonzero(np.diff(scores)), len(scores) - 1]  # the last row of each distinct score
    true_positives = np.cumsum(ranked)[last]
    precision = true_positives / (last + 1)
    recall = true_positives / true_positives[-1]
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def performance(labels: np.ndarray, probabilities: np.ndarray, threshold: float) -> dict:
    """Alert precision and recall at ``threshold``, AUPRC, labelled count and frauds."""
    labels = np.asarray(labels, dtype=bool)
    alerts = np.asarray(probabilities) >= threshold
    caught = int(np.count_nonzero(alerts & labels))
    frauds = int(np.count_nonzero(labels))
    return {
        "labelled": len(labels),
        "frauds": frauds,
        "alerts": int(np.count_nonzero(alerts)),
        "precision": caught / int(np.count_nonzero(alerts)) if alerts.any() else float("nan"),
        "recall": caught / frauds if frauds else float("nan"),
        "auprc": average_precision(labels, probabilities),
    }
