"""The closed loop's parts, in one process: the label join (late, early, missing, duplicated labels) in
bounded memory, live figures against scikit-learn's, the bundle store's atomic swap, the live promotion
decision in a real MLflow registry (SQLite store)."""

import json
import threading

import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from sklearn.metrics import average_precision_score

from lib.errors import ParameterError
from lib.model import registry
from lib.quality import average_precision, performance
from lib.serving import bundles, scoring
from lib.serving.scoring import BundleError
from lib.stream.live import LabelJoin
from tests.conftest import bundle_info
from tests.model.test_registry import new_version


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


def test_the_store_swaps_a_whole_pair_and_keeps_serving_when_a_new_one_is_broken(tmp_path, bundle):
    store = bundles.BundleStore(tmp_path / "bundles")
    with pytest.raises(BundleError, match="not a bundle store"):
        store.aliases()
    store.publish(bundle, 1)
    with pytest.raises(BundleError, match="no bundle v2"):
        store.set_aliases(champion=2)
    store.set_aliases(champion=1)
    models = bundles.LiveModels(store, interval=0.05)
    assert models.current.versions == ("3", None)  # the bundle's own metadata names the version it was
    second = scoring.export_bundle(tmp_path / "b2", scoring.Scorer.from_folder(bundle).booster,
                                   bundle_info(model_version="4", threshold=0.3))  # fmt: skip
    store.publish(second, 2)
    store.set_aliases(challenger=2)
    assert models.check() and models.current.versions == ("3", "4")  # the challenger joins, in shadow
    assert not models.check()  # nothing moved
    (store.folder / "v5").mkdir()  # a half-published bundle named by hand
    store.folder.joinpath("aliases.json").write_text(json.dumps({"champion": "5"}))
    assert not models.check() and models.current.versions == ("3", "4")  # still serving what it had
    store.set_aliases(champion=2, challenger=2)
    seen, stop = set(), threading.Event()

    def read() -> None:
        while not stop.is_set():
            served = models.current
            seen.add(served.versions)
            assert served.champion.info.model_version in ("3", "4")

    reader = threading.Thread(target=read)
    reader.start()
    assert models.check()
    stop.set()
    reader.join()
    assert models.current.versions == ("4", None) and seen <= {("3", "4"), ("4", None)}


def test_live_promotion_needs_enough_frauds_and_a_better_challenger(tmp_path, tracking_uri, bundle):
    client, name = MlflowClient(tracking_uri), f"live-{tmp_path.name}"
    registry.gate(client, name, new_version(client, name, tmp_path), 0.9, None)
    registry.gate(client, name, new_version(client, name, tmp_path), 0.95, 0.9, promotion="live")
    assert client.get_model_version(name, "2").tags["gate_decision"] == "awaiting_live_evidence"
    assert str(client.get_model_version_by_alias(name, "champion").version) == "1"
    store = bundles.BundleStore(tmp_path / "bundles")
    for version in (1, 2):
        store.publish(bundle, version)
    store.set_aliases(champion=1, challenger=2)
    rng = np.random.default_rng(1)
    labels = (rng.random(4_000) < 0.01).astype(int)
    better, worse = labels * 0.6 + rng.random(4_000) * 0.5, labels * 0.2 + rng.random(4_000) * 0.5

    def answer(n, champion=worse, challenger=better, roles=None):
        window = {"labels": labels[:n].tolist(), "thresholds": {"1": 0.5, "2": 0.5},
                  "probabilities": {"1": champion[:n].tolist(), "2": challenger[:n].tolist()}}  # fmt: skip
        return {"roles": roles or {"1": "champion", "2": "challenger"}, "window": window, "labels": {}}

    few = registry.promote_live(client, name, store, {"s:1": answer(500)}, min_frauds=20)
    assert not few.promoted and few.reason.startswith("no decision") and few.champion_version == "1"
    assert "live_decision" not in client.get_model_version(name, "2").tags  # nothing written without a decision
    with pytest.raises(ParameterError, match="serves v1 as champion, v3 as challenger"):
        registry.promote_live(
            client, name, store, {"s:1": answer(4_000, roles={"1": "champion", "3": "challenger"})}, 20
        )
    kept = registry.promote_live(client, name, store, {"s:1": answer(4_000, better, worse)}, min_frauds=20)
    assert not kept.promoted and client.get_model_version(name, "2").tags["live_decision"] == "kept_champion"
    # two members of the group, each with its own partitions: their windows are pooled
    pooled = {"s:1": answer(2_000), "s:2": answer(4_000)}
    promoted = registry.promote_live(client, name, store, pooled, min_frauds=20)
    tags = client.get_model_version(name, "2").tags
    assert promoted.promoted and promoted.champion_version == "2" and tags["live_decision"] == "promoted"
    assert float(tags["live_auprc"]) > float(tags["live_champion_auprc"]) and "6000 labelled" in tags["live_window"]
    assert str(client.get_model_version_by_alias(name, "champion").version) == "2"
    assert store.aliases()["champion"] == "2"
