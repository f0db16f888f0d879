"""The label join (late, early, missing, duplicated labels) in bounded memory, and the live figures against
scikit-learn's. (The bundle store's swap: tests/serving/test_bundles.py; live promotion: tests/model.)"""

import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from lib.quality import average_precision, performance
from lib.stream.live import LabelJoin


def scored(probabilities, version="1", threshold=0.5):
    return {version: (np.asarray(probabilities, dtype=np.float64), threshold)}


def test_average_precision_is_scikit_learns():
    rng = np.random.default_rng(0)
    for _ in range(20):
        labels = rng.random(500) < 0.05
        labels[0] = True
        scores = np.round(rng.random(500) + labels * rng.random(500), 2)  # ties on purpose
        assert average_precision(labels, scores) == pytest.approx(average_precision_score(labels, scores), abs=1e-12)
    figures = performance(np.array([1, 0, 1, 0]), np.array([0.9, 0.8, 0.1, 0.2]), 0.5)
    assert figures == {"labelled": 4, "frauds": 2, "alerts": 2, "precision": 0.5, "recall": 0.5,
                       "auprc": pytest.approx(0.75)}  # fmt: skip
    assert np.isnan(performance(np.array([0, 0]), np.array([0.1, 0.9]), 0.5)["recall"])


def test_late_early_missing_and_duplicated_labels():
    join = LabelJoin(capacity=100, window=50)
    join.add_results(["a", "b", "c"], {"1": (np.array([0.9, 0.1, 0.7]), 0.5), "2": (np.array([0.8, 0.2, 0.1]), 0.6)})
    join.add_label("a", 1)  # late: its result waits for it
    join.add_label("a", 1)  # the same label again (a redelivery)
    join.add_label("z", 0)  # early: its transaction is not scored yet
    join.add_results(["z"], scored([0.3]))
    join.add_results(["a"], scored([0.9]))  # a re-scored transaction whose label is in: not a second sample
    assert join.counts == {"joined": 2, "duplicate": 1, "expired": 0, "unmatched": 0}
    assert len(join.window) == 2 and set(join.waiting) == {"b", "c"}  # "c" never gets its label
    both = join.evidence(["1", "2"])
    assert both["labels"] == [1] and both["probabilities"] == {"1": [0.9], "2": [0.8]}
    assert both["thresholds"] == {"1": 0.5, "2": 0.6}
    assert join.performance("1")["labelled"] == 2 and join.performance("2")["labelled"] == 1


def test_a_result_scored_again_waits_as_the_newest_and_the_oldest_expires_first():
    join = LabelJoin(capacity=3)
    join.add_results(["a", "b", "c"], scored([0.1, 0.2, 0.3]))  # all new: one update
    join.add_results(["a", "d"], scored([0.9, 0.4]))  # "a" again (a redelivery): one by one
    assert list(join.waiting) == ["c", "a", "d"] and join.counts["expired"] == 1  # "b", the oldest
    assert join.waiting["a"] == (("1",), (0.9,))  # the newest result of "a"
    join.add_results(["e", "f"], scored([0.5, 0.6]))
    assert list(join.waiting) == ["d", "e", "f"] and join.counts["expired"] == 3


def test_the_store_is_bounded_and_says_what_it_dropped():
    join = LabelJoin(capacity=1_000, window=300)
    ids = [f"t{i}" for i in range(5_000)]
    join.add_results(ids, scored(np.linspace(0, 1, 5_000)))
    assert len(join.waiting) == 1_000 and join.counts["expired"] == 4_000  # the oldest results go first
    for i in range(5_000):  # every label comes: the expired ones' labels find no result
        join.add_label(f"t{i}", i % 2)
    assert len(join.early) <= 100 and len(join.labelled) <= 1_000 and len(join.window) == 300
    assert join.counts["joined"] == 1_000 and join.counts["unmatched"] == 4_000 - len(join.early)
    assert list(join.waiting) == []
