"""Reason codes: TreeSHAP contributions of the booster, on the row that was scored, in the feature spec's words."""

import re

import numpy as np
import pyarrow as pa
import pytest
import xgboost as xgb

from lib import contract, features
from lib.config import PROJECT_ROOT
from lib.serving import scoring


@pytest.fixture(scope="module")
def scored(bundle, raw_table):
    """5,000 raw rows (the real sample and simulated ones), their feature matrix, and their answers."""
    rows = raw_table.slice(0, 5000)
    columns = {name: rows.column(name).to_numpy(zero_copy_only=False) for name in rows.column_names}
    scorer = scoring.Scorer.from_folder(bundle)
    return scorer, features.compute(columns, scorer.info.feature_set), columns, rows


def test_contributions_plus_bias_equal_the_margin_row_by_row(scored):
    """What the reasons are cut from adds up: per row, the features' contributions and the bias are the margin,
    and the margin is the logit of the probability the compiled trees answered (the same trees explain it)."""
    scorer, matrix, columns, _ = scored
    data = xgb.DMatrix(matrix.astype(np.float32))
    contributions = scorer.booster.predict(data, pred_contribs=True, validate_features=False)
    margin = scorer.booster.predict(data, output_margin=True, validate_features=False)
    assert contributions.shape == (len(matrix), matrix.shape[1] + 1)
    np.testing.assert_allclose(contributions.sum(axis=1, dtype=np.float64), margin, rtol=1e-5, atol=1e-4)
    probability, _ = scorer.score_columns(columns)
    assert scorer.compiled is not None and scorer.compiled.batches
    unsaturated = (probability > 1e-6) & (probability < 1 - 1e-6)
    logit = np.log(probability[unsaturated] / (1 - probability[unsaturated]))
    np.testing.assert_allclose(logit, contributions.sum(axis=1, dtype=np.float64)[unsaturated], atol=1e-3)


def test_reasons_are_the_strongest_pushes_toward_fraud_in_the_specs_words(scored):
    scorer, matrix, _, _ = scored
    rows = np.arange(len(matrix))
    explained = scorer.explain(matrix, rows)
    contributions = scorer.booster.predict(
        xgb.DMatrix(matrix.astype(np.float32)), pred_contribs=True, validate_features=False
    )[:, :-1]
    spec = features.spec(scorer.info.feature_set)
    names = [f.name for f in spec]
    for row in rows:
        reasons = explained[row]
        pushed = contributions[row]
        strongest = sorted((j for j in range(len(spec)) if pushed[j] > 0), key=lambda j: -pushed[j])
        assert [r["feature"] for r in reasons] == [names[j] for j in strongest[: contract.TOP_REASONS]]
        for reason in reasons:
            j = names.index(reason["feature"])
            says = spec[j].says_for(matrix[row, j])
            assert reason == {"code": says.code, "feature": names[j], "text": says.sentence(matrix[row, j]),
                              "value": float(matrix[row, j]), "contribution": float(pushed[j])}  # fmt: skip
            assert reason["contribution"] > 0
    assert any(len(r) == contract.TOP_REASONS for r in explained.values())


def test_alerts_carry_reasons_and_other_decisions_only_when_asked(scored):
    scorer, _, columns, rows = scored
    ids = list(range(len(columns["step"])))
    answers = {explain: scorer.score_batch(columns, ids, explain) for explain in ("alerts", "all", "none")}
    alerts = [a for a in answers["alerts"] if a.is_fraud]
    assert alerts and all(a.reasons for a in alerts)
    assert not any(a.reasons for a in answers["alerts"] if not a.is_fraud)
    assert not any(a.reasons for a in answers["none"])
    everything = answers["all"]
    assert sum(bool(a.reasons) for a in everything) > len(alerts)  # non-alerts explained when asked
    assert [a for a in everything if a.is_fraud] == alerts  # an alert's reasons do not depend on its batch
    first = alerts[0].transaction_id  # alone, through the scalar path and the compiled trees: the same reasons
    record = {c: v for c, v in rows.slice(first, 1).to_pylist()[0].items() if c in features.INPUT_COLUMNS}
    assert scorer.score_records([{**record, "transaction_id": first}]) == [alerts[0]]


def test_the_arrow_answer_carries_the_reasons_as_structs():
    from lib.arrow_batch import reasons_array

    reason = {
        "code": "WHOLE_BALANCE",
        "feature": "amount_is_whole_balance",
        "text": "t",
        "value": 1.0,
        "contribution": 2.5,
    }
    array = reasons_array(4, {1: [reason, {**reason, "code": "X"}], 3: [reason]})
    assert array.to_pylist() == [[], [reason, {**reason, "code": "X"}], [], [reason]]
    assert array.type.value_type == pa.struct([(n, pa.float64() if n in ("value", "contribution") else pa.string())
                                               for n in contract.Reason.__annotations__])  # fmt: skip


def test_every_feature_ships_with_its_words_and_every_code_is_documented():
    """A feature cannot ship without what its value says in an alert: one sentence for a number, one per value
    for a flag, each code unique and listed in docs/serving.md's table of reason codes."""
    codes = []
    for feature in features.FEATURES:
        assert feature.says, feature.name
        assert len(feature.says) == 1 or (feature.dtype == "int8" and len(feature.says) == 2), feature.name
        for value in (0.0, 1.0, 7.5):
            sentence = feature.says_for(value).sentence(value)
            assert sentence and "{" not in sentence, (feature.name, sentence)
        codes += [s.code for s in feature.says]
    assert len(codes) == len(set(codes)) and all(re.fullmatch(r"[A-Z][A-Z_]*", c) for c in codes)
    documented = set(re.findall(r"^\| `([A-Z_]+)` \|", (PROJECT_ROOT / "docs" / "serving.md").read_text(), re.M))
    assert documented == set(codes)
