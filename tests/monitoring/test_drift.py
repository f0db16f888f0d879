"""The drift detector, tested both ways on the simulator: its drift scenario is flagged, a stationary run is not."""

import numpy as np
import pyarrow.parquet as pq
import pytest

from lib.data.simulate import DriftScenario, simulate_table
from lib.errors import ParameterError
from lib.monitoring import drift
from lib.serving import scoring

pytestmark = pytest.mark.slow

REFERENCE, CURRENT = (1, 250), (401, 743)  # the pipeline's default train and test windows


def frames(tmp_path, seed: int, scenario: DriftScenario):
    path = tmp_path / f"raw-{seed}.parquet"
    pq.write_table(simulate_table(100_000, seed=seed, drift=scenario), path)
    return (
        drift.window_frame(path, REFERENCE, "full", 40_000, 0),
        drift.window_frame(path, CURRENT, "full", 40_000, 0),
    )


@pytest.mark.parametrize("seed", [43, 7])
def test_a_stationary_run_is_not_flagged(tmp_path, seed):
    reference, current = frames(tmp_path, seed, DriftScenario())
    _, summary = drift.drift_report(reference, current, "full", threshold=0.1, drift_share=0.1)
    assert not summary.detected and summary.drifted == [], summary.scores
    # far from the threshold, not just under it. The largest is the whole-balance flag (~0.055): a fraud
    # signature, and the test window's fraud rate is ~14x the training window's (frauds are spread evenly
    # over the month, genuine volume drops after step 404), so its share moves without any drift
    others = {k: v for k, v in summary.scores.items() if k != "amount_is_whole_balance"}
    assert summary.scores["amount_is_whole_balance"] < 0.075 and max(others.values()) < 0.045, summary.scores


def test_the_drift_scenario_is_flagged_and_hurts_quality(tmp_path, bundle):
    reference, current = frames(
        tmp_path, 42, DriftScenario(CURRENT[0], amount_factor=3.0, fraud_pattern="partial_drain")
    )
    _, summary = drift.drift_report(reference, current, "full", threshold=0.1, drift_share=0.1)
    assert summary.detected and summary.share >= 0.1
    assert "log_amount" in summary.drifted and summary.scores["log_amount"] > 0.3
    assert summary.methods["log_amount"] == "wasserstein" and summary.methods["type_CASH_OUT"] == "jensenshannon"
    assert not set(summary.scores) & set(drift.CALENDAR_FEATURES)

    scorer = scoring.Scorer.from_folder(bundle)
    _, before, after = drift.quality_report(
        drift.add_predictions(reference, scorer), drift.add_predictions(current, scorer)
    )
    assert after.minus(before).recall < -0.3  # partial drains break the whole-balance signature the model learnt


def test_predictions_match_the_scoring_core(tmp_path, bundle):
    reference, _ = frames(tmp_path, 43, DriftScenario())
    scorer = scoring.Scorer.from_folder(bundle)
    scored = drift.add_predictions(reference.head(500), scorer)
    path = tmp_path / "raw-43.parquet"
    table = pq.read_table(path)
    ids = {f"t{i:09d}": i for i in range(table.num_rows)}
    rows = table.take([ids[t] for t in scored.transaction_id]).to_pylist()
    expected = [r.fraud_probability for r in scorer.score_records(rows)]
    assert np.allclose(scored.fraud_probability, expected, rtol=0, atol=1e-7)


def test_empty_window_is_refused(tmp_path):
    path = tmp_path / "raw.parquet"
    pq.write_table(simulate_table(2_000, seed=1), path)
    with pytest.raises(ParameterError, match="no transactions in steps 800-900"):
        drift.window_frame(path, (800, 900), "full", 0, 0)


def test_attribution_drift_is_the_models_mean_absolute_contribution_per_window(tmp_path, bundle):
    """07's attribution drift: per feature, the mean |TreeSHAP contribution| of the bundle in each window (the
    numbers alerts' reasons are cut from), its share, and the change of share, the largest first."""
    scorer = scoring.Scorer.from_folder(bundle)
    reference, current = frames(tmp_path, 42, DriftScenario(CURRENT[0], 3.0, "partial_drain"))
    table = drift.attribution(scorer, reference, current)
    names = list(scorer.info.features)
    assert sorted(table.index) == sorted(names)
    for window, frame in (("reference", reference), ("current", current)):
        expected = np.abs(scorer.contributions(frame[names].to_numpy())).mean(axis=0)
        np.testing.assert_allclose(table.loc[names, window], expected, rtol=1e-6)
        np.testing.assert_allclose(table[f"{window} share"].sum(), 1.0)
    change = (table["current share"] - table["reference share"]) * 100
    np.testing.assert_allclose(table["share change"], change)
    assert list(table["share change"].abs()) == sorted(table["share change"].abs(), reverse=True)
