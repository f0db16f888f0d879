"""The MLflow model registry gate: every new model is the ``challenger``; it becomes ``champion`` only if it wins.

The comparison is AUPRC on the same test window: the caller scores the current champion on the
window the challenger was judged on (or, when the champion cannot be scored there, passes its
recorded figure and says so in ``champion_note``). The decision and its reason are written as tags
on the model version, so the registry itself explains why an alias moved or did not.

With ``promotion="live"`` (retraining in the loop) the offline comparison is recorded but the
champion stays: the challenger runs in shadow and ``promote_live`` decides on the live evidence,
the labelled results both models scored (``lib.model.promotion``). Every alias move is also published
to the bundle store (``lib.serving.bundles``, ``FRAUD_BUNDLE_STORE``), which the apps watch; bundles
come from the registry through ``lib.model.fetch``.
"""

from dataclasses import dataclass
from pathlib import Path

import mlflow
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from lib.config import CHALLENGER, CHAMPION, Settings
from lib.errors import ParameterError
from lib.model import train
from lib.model.evaluate import Scorecard
from lib.model.fetch import fetch_bundle
from lib.quality import average_precision
from lib.serving import scoring
from lib.serving.bundles import BundleStore

PROMOTIONS = ("offline", "live")
COMPILED_SHA256_TAG = "compiled_sha256"  # a version's model.so, as exported


@dataclass(frozen=True)
class Decision:
    promoted: bool
    reason: str
    challenger_version: str | None  # None: nothing was registered
    champion_version: str | None  # the champion after the decision


def register(client: MlflowClient, name: str, model_uri: str, run_id: str, tags: dict[str, str]) -> ModelVersion:
    """A new version of ``name`` from a logged model, tagged, with alias ``challenger``."""
    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(name, description="PaySim fraud detector (pipeline 05_evaluate)")
    # MLflow resolves a ``models:/`` source through the process-wide tracking URI, not the client's:
    # without this, a notebook opened on its own (no MLFLOW_TRACKING_URI) looks in the wrong store
    mlflow.set_tracking_uri(client.tracking_uri)
    # a logged model (MLflow 3: ``models:/m-<id>``) must be named by id too, or a tracking server refuses it
    model_id = model_uri.removeprefix("models:/") if model_uri.startswith("models:/m-") else None
    version = client.create_model_version(
        name, model_uri, run_id=run_id, tags={k: str(v) for k, v in tags.items()}, model_id=model_id
    )
    client.set_registered_model_alias(name, CHALLENGER, version.version)
    return version


def current_champion(client: MlflowClient, name: str) -> ModelVersion | None:
    try:
        return client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None


def gate(
    client: MlflowClient,
    name: str,
    challenger: ModelVersion,
    challenger_auprc: float,
    champion_auprc: float | None,
    champion_note: str = "",
    promotion: str = "offline",
) -> Decision:
    """Move ``champion`` to the challenger if it has a strictly higher AUPRC (or there is no champion);
    with ``promotion="live"`` only the first model becomes champion here, the others wait in shadow."""
    if promotion not in PROMOTIONS:
        raise ParameterError(f"PROMOTION={promotion!r}: one of {', '.join(PROMOTIONS)}")
    champion = current_champion(client, name)
    if champion is None:
        promoted, reason = True, f"first model of {name}: becomes champion (AUPRC {challenger_auprc:.6f})"
    elif champion_auprc is None:
        promoted, reason = True, f"champion v{champion.version} has no AUPRC on this window; challenger promoted"
    elif challenger_auprc > champion_auprc:
        promoted = True
        reason = f"challenger AUPRC {challenger_auprc:.6f} > champion v{champion.version} {champion_auprc:.6f}"
    else:
        promoted = False
        reason = f"challenger AUPRC {challenger_auprc:.6f} <= champion v{champion.version} {champion_auprc:.6f}"
    if champion_note:
        reason = f"{reason} ({champion_note})"
    if promotion == "live" and champion is not None:
        offline = "wins" if promoted else "loses"
        promoted, reason = False, f"awaiting live evidence (in shadow); offline it {offline}: {reason}"
    if promoted:
        client.set_registered_model_alias(name, CHAMPION, challenger.version)
    verdict = "promoted" if promoted else "awaiting_live_evidence" if promotion == "live" else "rejected"
    client.set_model_version_tag(name, challenger.version, "gate_decision", verdict)
    client.set_model_version_tag(name, challenger.version, "gate_reason", reason)
    after = challenger.version if promoted or champion is None else champion.version
    return Decision(promoted, reason, str(challenger.version), str(after))


def champion_auprc(
    client: MlflowClient, name: str, processed: str, split: str, cache_dir: str
) -> tuple[float | None, str]:
    """The current champion's AUPRC on ``split`` of ``processed``, by scoring it there with its own bundle.

    Returns (None, note) when there is no champion, and its recorded test AUPRC (with a note) when it
    was trained on another feature spec and so cannot be scored on these features.
    """
    champion = current_champion(client, name)
    if champion is None:
        return None, "no champion yet"
    try:
        scorer = scoring.Scorer.from_folder(fetch_bundle(client.tracking_uri, name, CHAMPION, cache_dir))
    except scoring.BundleError as exc:
        recorded = champion.tags.get("test_auprc")
        return (float(recorded) if recorded else None), f"champion not re-scored: {exc}; used its recorded AUPRC"
    window = train.load_matrix(processed, split, scorer.info.feature_set)
    probability, _ = scorer.score_features(window.X)
    auprc = average_precision(window.y, probability)
    return auprc, f"champion v{champion.version} re-scored on this {split} window"


@dataclass(frozen=True)
class Submission:
    """What 05_evaluate's registry step did: the gate's decision, the champion now served (its bundle is
    exported to ``bundle_path``) and the challenger's bundle (None when nothing new was registered)."""

    decision: Decision
    champion: scoring.Scorer
    challenger: scoring.Scorer | None


def submit(
    client: MlflowClient,
    settings: Settings,
    candidate: train.Candidate,
    record: dict,
    card: Scorecard,
    window: train.SplitMatrix,
    processed: str | Path,
    bundle_path: Path,
    store: BundleStore,
    promotion: str = "offline",
) -> Submission:
    """Register ``candidate`` as the challenger with its serving bundle, gate it against the champion
    re-scored on the same window, export the champion's bundle to ``bundle_path`` and publish both to
    ``store`` with the registry's aliases.

    ``record`` is what 04_train saved for the candidate (MLflow run and model URI, lineage), ``card``
    its scorecard on ``window`` (AUPRC, threshold). A candidate byte-identical to the champion (same
    data, code and seed) is not registered again: the registry would only fill with copies.
    """
    name = settings.registered_model
    champion_dir = bundle_path.with_name(f"{bundle_path.name}.champion")
    current = current_champion(client, name)
    if current is not None and _same_model(client, name, candidate, champion_dir):
        reason = (
            f"{candidate.name} is byte-identical to champion v{current.version} (same data, code and seed): "
            "nothing registered, champion kept"
        )
        served = _publish(client, name, bundle_path, store, str(current.version))
        return Submission(Decision(False, reason, None, str(current.version)), served, None)
    tags = {
        "candidate": candidate.name,
        "feature_set": candidate.feature_set,
        "feature_spec_version": record["feature_spec_version"],
        "training_data_sha256": record["training_data_sha256"],
        "threshold": card.threshold,
        "test_auprc": card.auprc,
        "test_window": f"{window.step.min()}-{window.step.max()}",
        "pipeline_run_id": settings.pipeline_run_id,
    }
    version = register(client, name, record["model_uri"], record["mlflow_run_id"], tags)
    info = scoring.BundleInfo(
        model_name=name, model_version=str(version.version), feature_set=candidate.feature_set,
        feature_spec_version=record["feature_spec_version"], features=list(candidate.features),
        threshold=card.threshold, training_data_sha256=record["training_data_sha256"], candidate=candidate.name,
        test_auprc=card.auprc,
    )  # fmt: skip
    challenger = scoring.export_bundle(bundle_path.with_name(f"{bundle_path.name}.challenger"), candidate.model, info)
    compiled = scoring.read_info(challenger / scoring.BUNDLE_FILE).compiled
    if (
        compiled is not None
    ):  # kept outside the bundle store: what FRAUD_COMPILED_MODELS=registry checks model.so against
        client.set_model_version_tag(name, version.version, COMPILED_SHA256_TAG, compiled.sha256)
    client.log_artifacts(record["mlflow_run_id"], str(challenger), scoring.bundle_artifact_path(version.version))
    rescored, note = champion_auprc(client, name, str(processed), window.split, str(champion_dir))
    decision = gate(client, name, version, card.auprc, rescored, note, promotion)
    served = _publish(
        client, name, bundle_path, store, str(decision.champion_version), (challenger, str(version.version))
    )
    return Submission(decision, served, scoring.Scorer.from_folder(challenger))


def _publish(
    client: MlflowClient, name: str, bundle_path: Path, store: BundleStore, champion: str,
    challenger: tuple[Path, str] | None = None,
) -> scoring.Scorer:  # fmt: skip
    """The registry's champion exported to ``bundle_path`` and published to ``store`` with the challenger (its
    bundle folder and version), aliases included; returns the champion's scorer."""
    served = scoring.Scorer.from_folder(fetch_bundle(client.tracking_uri, name, CHAMPION, bundle_path))
    if challenger is not None:
        store.publish(*challenger)
    store.publish(bundle_path, champion)
    store.set_aliases(champion=champion, **({CHALLENGER: challenger[1]} if challenger else {}))
    return served


def _same_model(client: MlflowClient, name: str, candidate: train.Candidate, folder: Path) -> bool:
    """Whether the champion's bundle holds exactly ``candidate``'s trees, for its feature set."""
    try:
        champion = scoring.Scorer.from_folder(fetch_bundle(client.tracking_uri, name, CHAMPION, folder))
    except scoring.BundleError:
        return False
    same_trees = champion.booster.save_raw("ubj") == candidate.model.save_raw("ubj")
    return same_trees and champion.info.feature_set == candidate.feature_set
