"""Time-aware evaluation the way fraud teams judge a model: the rare class, money, and an alert budget.

Everything is computed on one window (the test window in 05_evaluate) from fraud probabilities,
labels, amounts and steps. The decision threshold is chosen by cost on the *validation* window and
then applied unchanged to the test window, so the test window never tunes anything.
"""

import dataclasses
from dataclasses import dataclass
from typing import Annotated

import numpy as np
from sklearn.metrics import confusion_matrix, precision_recall_curve, roc_auc_score, roc_curve

from lib.errors import ParameterError
from lib.quality import average_precision
from lib.units import Count, Money, Rate, Score, Unit


@dataclass(frozen=True)
class CostThreshold:
    threshold: float
    cost: float
    alerts: int


def cost_threshold(probability: np.ndarray, y: np.ndarray, amount: np.ndarray, review_cost: float) -> CostThreshold:
    """The threshold with the lowest cost: missed frauds cost their amount, every alert costs ``review_cost``.

    Scans every distinct score once (sorted, cumulative sums), so it is exact and O(n log n).
    """
    if review_cost < 0:
        raise ParameterError(f"REVIEW_COST={review_cost}: a review cannot cost less than 0")
    order = np.argsort(-probability, kind="stable")
    p, caught = probability[order], np.cumsum(amount[order] * y[order])
    last_of_score = np.flatnonzero(np.r_[p[1:] != p[:-1], True])  # alert everything scoring >= p[i]
    alerts = last_of_score + 1
    fraud_total = float((amount * y).sum())
    costs = fraud_total - caught[last_of_score] + alerts * review_cost
    best = int(np.argmin(costs))
    if costs[best] >= fraud_total:  # alerting on nothing is cheapest
        return CostThreshold(float(np.nextafter(p[0], np.inf)), fraud_total, 0)
    return CostThreshold(float(p[last_of_score[best]]), float(costs[best]), int(alerts[best]))


def costs(decision: np.ndarray, y: np.ndarray, amount: np.ndarray, review_cost: float) -> float:
    """Money lost to missed frauds plus the cost of reviewing every alert."""
    return float((amount * y * ~decision).sum() + decision.sum() * review_cost)


def recall_at_fpr(y: np.ndarray, probability: np.ndarray, target_fpr: float) -> float:
    fpr, tpr, _ = roc_curve(y, probability)
    return float(tpr[fpr <= target_fpr].max())


def precision_at_k_per_day(y: np.ndarray, probability: np.ndarray, step: np.ndarray, k: int) -> dict[int, float]:
    """For each day: the share of frauds among the ``k`` highest-scored transactions of that day."""
    day = (step - 1) // 24
    result = {}
    for d in np.unique(day):
        mask = day == d
        top = np.argsort(-probability[mask], kind="stable")[:k]
        result[int(d)] = float(y[mask][top].mean())
    return result


@dataclass
class Scorecard:
    """One model on one window at one threshold: how it ranks, what its alerts catch, and what they cost."""

    auprc: Score
    roc_auc: Score
    recall_at_target_fpr: Rate  # recall where the false-positive rate is at most target_fpr
    target_fpr: Rate
    precision_at_budget: Rate  # mean over days of the precision of each day's alert_budget top scores
    alert_budget_per_day: Count
    threshold: Score
    precision: Rate
    recall: Rate
    alerts: Count
    alerts_per_day: Annotated[float, Unit.COUNT]  # shown rounded
    true_positives: Count
    false_positives: Count
    false_negatives: Count
    true_negatives: Count
    cost: Money
    cost_no_model: Money
    cost_flagged_rule: Money
    saved_vs_no_model: Money
    saved_vs_flagged_rule: Money
    validation_auprc: Score | None = None  # the candidate's, on its validation window


def evaluate(
    probability: np.ndarray,
    y: np.ndarray,
    amount: np.ndarray,
    step: np.ndarray,
    flagged: np.ndarray,
    *,
    threshold: float,
    review_cost: float,
    target_fpr: float,
    alert_budget: int,
) -> Scorecard:
    """The scorecard of one model on one window, at a threshold chosen elsewhere."""
    if y.sum() == 0 or y.sum() == len(y):
        raise ParameterError("the window has only one class; AUPRC and ROC-AUC need frauds and genuine rows")
    decision = probability >= threshold
    tn, fp, fn, tp = (int(n) for n in confusion_matrix(y, decision, labels=[0, 1]).ravel())
    no_model = float((amount * y).sum())
    model_cost = costs(decision, y, amount, review_cost)
    rule_cost = costs(flagged.astype(bool), y, amount, review_cost)
    days = (int(step.max()) - int(step.min()) + 1) / 24
    return Scorecard(
        auprc=average_precision(y, probability),
        roc_auc=float(roc_auc_score(y, probability)),
        recall_at_target_fpr=recall_at_fpr(y, probability, target_fpr),
        target_fpr=target_fpr,
        precision_at_budget=float(np.mean(list(precision_at_k_per_day(y, probability, step, alert_budget).values()))),
        alert_budget_per_day=alert_budget,
        threshold=float(threshold),
        precision=tp / (tp + fp) if tp + fp else 0.0,
        recall=tp / (tp + fn),
        alerts=tp + fp,
        alerts_per_day=(tp + fp) / days,
        true_positives=tp,
        false_positives=fp,
        false_negatives=fn,
        true_negatives=tn,
        cost=model_cost,
        cost_no_model=no_model,
        cost_flagged_rule=rule_cost,
        saved_vs_no_model=no_model - model_cost,
        saved_vs_flagged_rule=rule_cost - model_cost,
    )


def scorecards(
    candidates: list, windows: dict[str, dict], *, review_cost: float, target_fpr: float, alert_budget: int
) -> tuple[dict[str, np.ndarray], dict[str, Scorecard]]:
    """Each candidate's test-window probabilities and scorecard (``evaluate``), at the threshold chosen by
    cost on its validation window. ``windows[feature_set]`` holds the ``validation`` and ``test`` matrices."""
    scores, cards = {}, {}
    for candidate in candidates:
        validation, test = windows[candidate.feature_set]["validation"], windows[candidate.feature_set]["test"]
        chosen = cost_threshold(candidate.predict(validation.X), validation.y, validation.amount, review_cost)
        scores[candidate.name] = candidate.predict(test.X)
        card = evaluate(
            scores[candidate.name], test.y, test.amount, test.step, test.flagged, threshold=chosen.threshold,
            review_cost=review_cost, target_fpr=target_fpr, alert_budget=alert_budget,
        )  # fmt: skip
        cards[candidate.name] = dataclasses.replace(card, validation_auprc=candidate.validation_auprc)
    return scores, cards


def bundle_card(
    scorer, windows: dict[str, dict], *, review_cost: float, target_fpr: float, alert_budget: int
) -> Scorecard:
    """A serving bundle's scorecard on the test window of its feature set, at the bundle's own threshold
    (how the champion does on the window the challenger was judged on)."""
    test = windows[scorer.info.feature_set]["test"]
    probability, _ = scorer.score_features(test.X)
    return evaluate(
        probability, test.y, test.amount, test.step, test.flagged, threshold=scorer.info.threshold,
        review_cost=review_cost, target_fpr=target_fpr, alert_budget=alert_budget,
    )  # fmt: skip


@dataclass(frozen=True)
class ReferenceScore:
    """A bundle on the real, labelled PaySim rows."""

    auprc: Score
    rows: Count
    frauds: Count


def reference_auprc(scorer, path: str) -> ReferenceScore:
    """AUPRC of a serving bundle on real, labelled PaySim rows (``data/reference``), scored by the scoring core.

    The real sample's 980 spreadsheet-rounded rows (see its README) are kept: balances off by up to
    +-50,000 are part of what a model meets in real data.
    """
    from lib.data.acquire import read_batches

    labels, scores = [], []
    for batch in read_batches(path):
        columns = {name: batch.column(name).to_numpy(zero_copy_only=False) for name in batch.schema.names}
        probability, _ = scorer.score_columns(columns)
        labels.append(columns["isFraud"])
        scores.append(probability)
    y, p = np.concatenate(labels), np.concatenate(scores)
    return ReferenceScore(average_precision(y, p), len(y), int(y.sum()))


def plot_pr_curves(curves: dict[str, tuple[np.ndarray, np.ndarray]]):
    """Precision-recall curves of several models on the same window: {name: (y, probability)}."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5))
    for name, (y, probability) in curves.items():
        precision, recall, _ = precision_recall_curve(y, probability)
        ax.plot(recall, precision, label=f"{name} (AUPRC {average_precision(y, probability):.3f})")
    ax.set(xlabel="recall", ylabel="precision", title="Precision-recall on the test window", ylim=(0, 1.02))
    ax.legend(loc="lower left")
    return fig


def plot_confusion(y: np.ndarray, probability: np.ndarray, threshold: float, title: str):
    import matplotlib.pyplot as plt

    matrix = confusion_matrix(y, probability >= threshold, labels=[0, 1])
    fig, ax = plt.subplots(figsize=(4, 4))
    shade = np.log1p(matrix)
    ax.imshow(shade, cmap="Blues")
    for (i, j), count in np.ndenumerate(matrix):  # white on the dark cells, black on the light ones
        dark = shade[i, j] > shade.max() / 2
        ax.text(j, i, f"{count:,}", ha="center", va="center", color="white" if dark else "black", fontsize=12)
    ax.set(
        xticks=[0, 1], yticks=[0, 1], xticklabels=["genuine", "fraud"], yticklabels=["genuine", "fraud"],
        xlabel="predicted", ylabel="actual", title=f"{title}\nthreshold {threshold:.4f}",
    )  # fmt: skip
    return fig


def plot_calibration(curves: dict[str, tuple[np.ndarray, np.ndarray]], bins: int = 10):
    """Predicted probability vs observed fraud rate (quantile bins, log scale: frauds are rare)."""
    import matplotlib.pyplot as plt
    from sklearn.calibration import calibration_curve

    fig, ax = plt.subplots(figsize=(6, 5))
    for name, (y, probability) in curves.items():
        observed, predicted = calibration_curve(y, probability, n_bins=bins, strategy="quantile")
        ax.plot(np.clip(predicted, 1e-6, 1), np.clip(observed, 1e-6, 1), marker="o", label=name)
    ax.plot([1e-6, 1], [1e-6, 1], color="grey", linestyle=":", label="perfect")
    ax.set(xscale="log", yscale="log", xlabel="mean predicted probability", ylabel="observed fraud rate")
    ax.set_title("Calibration on the test window")
    ax.legend()
    return fig


def shap_importance(booster, X: np.ndarray, names: tuple[str, ...]) -> dict[str, float]:
    """Mean |SHAP contribution| per feature from XGBoost's native TreeSHAP (``pred_contribs``)."""
    import xgboost as xgb

    contributions = booster.predict(xgb.DMatrix(X, feature_names=list(names)), pred_contribs=True)
    mean_abs = np.abs(contributions[:, :-1]).mean(axis=0)  # the last column is the bias
    return dict(sorted(zip(names, mean_abs.astype(float), strict=True), key=lambda kv: -kv[1]))


def plot_importance(importance: dict[str, float], title: str):
    import matplotlib.pyplot as plt

    names, values = list(importance)[::-1], list(importance.values())[::-1]
    fig, ax = plt.subplots(figsize=(6, 0.3 * len(names) + 1))
    ax.barh(names, values)
    ax.set(xlabel="mean |SHAP contribution| (log-odds)", title=title)
    return fig
