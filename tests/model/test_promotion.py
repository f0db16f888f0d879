"""Live promotion in a real MLflow registry (SQLite store): enough labelled frauds and a better challenger."""

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from lib.errors import ParameterError
from lib.model import promotion, registry
from lib.serving import bundles
from tests.model.test_registry import new_version


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
    better, worse = labels * 0.5 + rng.random(4_000) * 0.5, labels * 0.2 + rng.random(4_000) * 0.5

    def answer(n, champion=worse, challenger=better, roles=None, scorer="host/1/a"):
        window = {"labels": labels[:n].tolist(), "thresholds": {"1": 0.5, "2": 0.5},
                  "probabilities": {"1": champion[:n].tolist(), "2": challenger[:n].tolist()}}  # fmt: skip
        return {
            "roles": roles or {"1": "champion", "2": "challenger"},
            "window": window,
            "labels": {},
            "scorer": scorer,
        }

    few = promotion.promote_live(client, name, store, {"s:1": answer(500)}, min_frauds=20)
    assert not few.promoted and few.reason.startswith("no decision") and few.champion_version == "1"
    assert "live_decision" not in client.get_model_version(name, "2").tags  # nothing written without a decision
    with pytest.raises(ParameterError, match="serves v1 as champion, v3 as challenger"):
        promotion.promote_live(
            client, name, store, {"s:1": answer(4_000, roles={"1": "champion", "3": "challenger"})}, 20
        )
    kept = promotion.promote_live(client, name, store, {"s:1": answer(4_000, better, worse)}, min_frauds=20)
    assert not kept.promoted and client.get_model_version(name, "2").tags["live_decision"] == "kept_champion"
    # two members of the group, each with its own partitions: their windows are pooled
    pooled = {"s:1": answer(2_000), "s:2": answer(4_000, scorer="host/2/b")}
    promoted = promotion.promote_live(client, name, store, pooled, min_frauds=20)
    tags = client.get_model_version(name, "2").tags
    assert promoted.promoted and promoted.champion_version == "2" and tags["live_decision"] == "promoted"
    assert float(tags["live_auprc"]) > float(tags["live_champion_auprc"]) and "6000 labelled" in tags["live_window"]
    assert str(client.get_model_version_by_alias(name, "champion").version) == "2"
    assert store.aliases()["champion"] == "2"
