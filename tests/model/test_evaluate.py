"""Fraud-team measures: AUPRC, recall at a false-positive rate, precision@k per day, cost-based threshold."""

import numpy as np
import pytest

from lib.errors import ParameterError
from lib.model import evaluate


def brute_force_cost(p, y, amount, review_cost):
    candidates = np.r_[np.unique(p), np.inf]
    costs = [evaluate.costs(p >= t, y, amount, review_cost) for t in candidates]
    return min(costs)


@pytest.mark.parametrize("seed", range(5))
def test_cost_threshold_is_the_cheapest_of_all_thresholds(seed):
    rng = np.random.default_rng(seed)
    n = 400
    y = (rng.random(n) < 0.05).astype(np.int8)
    p = np.round(np.clip(rng.normal(0.3 + 0.4 * y, 0.2), 0, 1), 2)  # ties on purpose
    amount = rng.lognormal(5, 1.5, n)
    chosen = evaluate.cost_threshold(p, y, amount, review_cost=50.0)
    assert chosen.cost == pytest.approx(brute_force_cost(p, y, amount, 50.0))
    assert chosen.cost == pytest.approx(evaluate.costs(p >= chosen.threshold, y, amount, 50.0))
    assert chosen.alerts == int((p >= chosen.threshold).sum())


def test_cost_threshold_alerts_on_nothing_when_reviews_cost_more_than_frauds():
    p, y, amount = np.array([0.9, 0.1]), np.array([1, 0]), np.array([10.0, 10.0])
    chosen = evaluate.cost_threshold(p, y, amount, review_cost=1000.0)
    assert chosen.alerts == 0 and chosen.threshold > 0.9 and chosen.cost == 10.0
    with pytest.raises(ParameterError, match="REVIEW_COST"):
        evaluate.cost_threshold(p, y, amount, review_cost=-1)


def test_scorecard_on_a_known_window():
    y = np.array([1, 1, 0, 0, 0, 0, 1, 0])
    p = np.array([0.9, 0.8, 0.7, 0.1, 0.2, 0.05, 0.3, 0.6])
    amount = np.array([100.0, 200.0, 5.0, 5.0, 5.0, 5.0, 1000.0, 5.0])
    step = np.array([1, 2, 3, 4, 25, 26, 27, 28])  # day 0: rows 0-3, day 1: rows 4-7
    flagged = np.array([0, 0, 0, 0, 0, 0, 1, 0])
    card = evaluate.evaluate(
        p, y, amount, step, flagged, threshold=0.75, review_cost=10.0, target_fpr=0.0, alert_budget=1
    )
    assert card.auprc == pytest.approx((1 + 1 + 3 / 5) / 3)
    assert card.roc_auc == pytest.approx(13 / 15)
    assert card.recall_at_target_fpr == pytest.approx(2 / 3) and card.target_fpr == 0
    assert card.precision_at_budget == pytest.approx((1 + 0) / 2)  # day 1's top score (0.6) is genuine
    assert (card.true_positives, card.false_positives, card.false_negatives) == (2, 0, 1)
    assert card.alerts == 2 and card.alerts_per_day == pytest.approx(2 / (28 / 24))  # steps 1-28
    assert card.cost_no_model == 1300 and card.cost == 1000 + 2 * 10
    assert card.cost_flagged_rule == 300 + 10 and card.saved_vs_flagged_rule == 310 - 1020
    with pytest.raises(ParameterError, match="only one class"):
        evaluate.evaluate(
            p, np.zeros(8), amount, step, flagged, threshold=0.5, review_cost=1, target_fpr=0.01, alert_budget=1
        )


def test_shap_importance_ranks_the_informative_feature_first():
    import xgboost as xgb

    rng = np.random.default_rng(0)
    X = rng.normal(size=(2000, 3)).astype(np.float32)
    y = (X[:, 1] > 0.5).astype(int)
    booster = xgb.train({"max_depth": 2, "seed": 0}, xgb.DMatrix(X, label=y), num_boost_round=20)
    importance = evaluate.shap_importance(booster, X, ("noise_a", "signal", "noise_b"))
    assert next(iter(importance)) == "signal" and importance["signal"] > 10 * importance["noise_a"]
