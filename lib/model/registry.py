"""The MLflow model registry gate: every new model is the ``challenger``; it becomes ``champion`` only if it wins.

The comparison is AUPRC on the same test window: the caller scores the current champion on the
window the challenger was judged on (or, when the champion cannot be scored there, passes its
recorded figure and says so in ``champion_note``). The decision and its reason are written as tags
on the model version, so the registry itself explains why an alias moved or did not.

With ``promotion="live"`` (retraining in the loop) the offline comparison is recorded but the
champion stays: the challenger runs in shadow and ``promote_live`` decides on the live evidence,
the labelled results both models scored. Every alias move is also published to the bundle store
next to the served bundle (``lib.serving.bundles``), which the apps watch.
"""

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from lib import atomic
from lib.config import CHALLENGER, CHAMPION, REGISTRY_ALIASES, Settings
from lib.errors import ParameterError
from lib.model import train
from lib.quality import performance
from lib.serving import scoring
from lib.serving.bundles import BundleStore

PROMOTIONS = ("offline", "live")


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
    after = challenger.version if promoted else champion.version
    return Decision(promoted, reason, str(challenger.version), str(after))


def fetch_bundle(tracking_uri: str, model_name: str, alias: str, dest: str | Path) -> Path:
    """Download the serving bundle of ``models:/<model_name>@<alias>`` from MLflow into ``dest`` (atomically)."""
    client = MlflowClient(tracking_uri=tracking_uri)
    try:
        version = client.get_model_version_by_alias(model_name, alias)
    except MlflowException as exc:
        raise scoring.BundleError(
            f"no model {model_name!r} with alias {alias!r} in MLflow at {tracking_uri}; run the pipeline "
            "through 05_evaluate first, or pass a bundle folder"
        ) from exc
    artifact = scoring.bundle_artifact_path(version.version)
    with tempfile.TemporaryDirectory() as download, atomic.staged_dir(Path(dest)) as tmp:
        try:  # stores differ in where below dst_path the files land; the returned path is the truth
            fetched = Path(client.download_artifacts(version.run_id, artifact, download))
        except MlflowException as exc:
            raise scoring.BundleError(
                f"{model_name} v{version.version} (alias {alias!r}) has no serving bundle at {artifact} of run "
                f"{version.run_id}; was it registered by 05_evaluate? ({exc})"
            ) from exc
        shutil.copytree(fetched, tmp)
    return Path(dest)


def bundle_folder(model: str, settings: Settings) -> Path:
    """A bundle folder for ``model``: a registry alias (``champion``, ``challenger``) is downloaded, a path is used."""
    if model in REGISTRY_ALIASES:
        dest = settings.bundle_cache / f"{settings.registered_model}-{model}"
        return fetch_bundle(settings.mlflow_tracking_uri, settings.registered_model, model, dest)
    return scoring.bundle_path(model)


def champion_auprc(
    client: MlflowClient, name: str, processed: str, split: str, cache_dir: str
) -> tuple[float | None, str]:
    """The current champion's AUPRC on ``split`` of ``processed``, by scoring it there with its own bundle.

    Returns (None, note) when there is no champion, and its recorded test AUPRC (with a note) when it
    was trained on another feature spec and so cannot be scored on these features.
    """
    from sklearn.metrics import average_precision_score

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
    auprc = float(average_precision_score(window.y, probability))
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
    card: dict,
    window: train.SplitMatrix,
    processed: str | Path,
    bundle_path: Path,
    promotion: str = "offline",
) -> Submission:
    """Register ``candidate`` as the challenger with its serving bundle, gate it against the champion
    re-scored on the same window, export the champion's bundle to ``bundle_path`` and publish both to
    the bundle store beside it (``bundle_store(bundle_path)``).

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
        served = scoring.Scorer.from_folder(fetch_bundle(client.tracking_uri, name, CHAMPION, bundle_path))
        store = BundleStore(bundle_store(bundle_path))
        store.publish(bundle_path, current.version)
        store.set_aliases(champion=current.version)
        return Submission(Decision(False, reason, None, str(current.version)), served, None)
    tags = {
        "candidate": candidate.name,
        "feature_set": candidate.feature_set,
        "feature_spec_version": record["feature_spec_version"],
        "training_data_sha256": record["training_data_sha256"],
        "threshold": card["threshold"],
        "test_auprc": card["auprc"],
        "test_window": f"{window.step.min()}-{window.step.max()}",
        "pipeline_run_id": settings.pipeline_run_id,
    }
    version = register(client, name, record["model_uri"], record["mlflow_run_id"], tags)
    info = scoring.BundleInfo(
        model_name=name, model_version=str(version.version), feature_set=candidate.feature_set,
        feature_spec_version=record["feature_spec_version"], features=list(candidate.features),
        threshold=card["threshold"], training_data_sha256=record["training_data_sha256"], candidate=candidate.name,
        test_auprc=card["auprc"],
    )  # fmt: skip
    challenger = scoring.export_bundle(bundle_path.with_name(f"{bundle_path.name}.challenger"), candidate.model, info)
    client.log_artifacts(record["mlflow_run_id"], str(challenger), scoring.bundle_artifact_path(version.version))
    rescored, note = champion_auprc(client, name, str(processed), window.split, str(champion_dir))
    decision = gate(client, name, version, card["auprc"], rescored, note, promotion)
    served = scoring.Scorer.from_folder(fetch_bundle(client.tracking_uri, name, CHAMPION, bundle_path))
    store = BundleStore(bundle_store(bundle_path))
    store.publish(challenger, version.version)
    store.publish(bundle_path, decision.champion_version)
    store.set_aliases(champion=decision.champion_version, challenger=version.version)
    return Submission(decision, served, scoring.Scorer.from_folder(challenger))


def bundle_store(bundle_path: str | Path) -> Path:
    """The bundle store 05_evaluate publishes beside its served bundle: ``data/bundle`` -> ``data/bundles``."""
    return Path(bundle_path).with_name(f"{Path(bundle_path).name}s")


def _same_model(client: MlflowClient, name: str, candidate: train.Candidate, folder: Path) -> bool:
    """Whether the champion's bundle holds exactly ``candidate``'s trees, for its feature set."""
    try:
        champion = scoring.Scorer.from_folder(fetch_bundle(client.tracking_uri, name, CHAMPION, folder))
    except scoring.BundleError:
        return False
    same_trees = champion.booster.save_raw("ubj") == candidate.model.save_raw("ubj")
    return same_trees and champion.info.feature_set == candidate.feature_set


@dataclass(frozen=True)
class LiveEvidence:
    """Labelled live results that champion and challenger both scored (pooled over scorers)."""

    labels: np.ndarray
    champion: np.ndarray  # the champion's probabilities, row for row
    challenger: np.ndarray
    thresholds: dict[str, float]
    sources: list[str]

    @property
    def frauds(self) -> int:
        return int(self.labels.sum())


def live_evidence(answers: dict[str, dict], champion: str, challenger: str) -> LiveEvidence:
    """Pool the ``/live`` answers of stream scorers (``{address: answer}``); each must serve exactly
    this champion and challenger, or its window compares other models and is refused."""
    labels, first, second, thresholds = [], [], [], {}
    for address, answer in answers.items():
        roles = answer["roles"]
        if roles.get(champion) != CHAMPION or roles.get(challenger) != CHALLENGER:
            served = ", ".join(f"v{v} as {r}" for v, r in sorted(roles.items())) or "nothing yet"
            raise ParameterError(
                f"the stream scorer at {address} serves {served}, but the registry's champion is v{champion} and "
                f"its challenger v{challenger}: wait for it to reload the bundle store (--reload-interval), or "
                "check that it serves the store 05_evaluate publishes (--model data/bundles)"
            )
        window = answer["window"]
        labels += window["labels"]
        first += window["probabilities"][champion]
        second += window["probabilities"][challenger]
        thresholds.update(window["thresholds"])
    as_array = lambda values: np.asarray(values, dtype=np.float64)  # noqa: E731
    return LiveEvidence(np.asarray(labels, dtype=np.int64), as_array(first), as_array(second), thresholds,
                        sorted(answers))  # fmt: skip


def promote_live(
    client: MlflowClient, name: str, store: BundleStore, answers: dict[str, dict], min_frauds: int
) -> Decision:
    """``registry promote --evidence live``: the challenger becomes champion only if its AUPRC on the
    labelled live window is strictly higher than the champion's on the same results, and only once that
    window holds ``min_frauds`` labelled frauds (fewer: no decision, nothing written). The decision,
    the window and both models' figures are written as tags on the challenger's version."""
    champion = current_champion(client, name)
    try:
        challenger = client.get_model_version_by_alias(name, CHALLENGER)
    except MlflowException:
        challenger = None
    if champion is None or challenger is None or challenger.version == champion.version:
        return Decision(False, f"no challenger besides the champion of {name}: nothing to decide",
                        None, str(champion.version) if champion else None)  # fmt: skip
    evidence = live_evidence(answers, str(champion.version), str(challenger.version))
    if evidence.frauds < min_frauds:
        reason = (
            f"no decision: {evidence.frauds} labelled frauds in the live window ({len(evidence.labels):,} labelled "
            f"results), {min_frauds} needed"
        )
        return Decision(False, reason, str(challenger.version), str(champion.version))
    theirs = performance(evidence.labels, evidence.champion, evidence.thresholds[str(champion.version)])
    ours = performance(evidence.labels, evidence.challenger, evidence.thresholds[str(challenger.version)])
    promoted = ours["auprc"] > theirs["auprc"]
    comparison = ">" if promoted else "<="
    reason = (
        f"live AUPRC {ours['auprc']:.6f} {comparison} champion v{champion.version} {theirs['auprc']:.6f} on the same "
        f"{len(evidence.labels):,} labelled results ({evidence.frauds} frauds)"
    )
    tags = {
        "live_decision": "promoted" if promoted else "kept_champion",
        "live_reason": reason,
        "live_window": f"{len(evidence.labels)} labelled, {evidence.frauds} frauds, from {', '.join(evidence.sources)}",
        "live_champion_version": champion.version,
        **{f"live_{k}": f"{ours[k]:.6g}" for k in ("auprc", "precision", "recall")},
        **{f"live_champion_{k}": f"{theirs[k]:.6g}" for k in ("auprc", "precision", "recall")},
    }
    for key, value in tags.items():
        client.set_model_version_tag(name, challenger.version, key, str(value))
    if promoted:
        client.set_registered_model_alias(name, CHAMPION, challenger.version)
        store.set_aliases(champion=challenger.version)
    after = challenger.version if promoted else champion.version
    return Decision(promoted, reason, str(challenger.version), str(after))
