"""The MLflow model registry gate: every new model is the ``challenger``; it becomes ``champion`` only if it wins.

The comparison is AUPRC on the same test window: the caller scores the current champion on the
window the challenger was judged on (or, when the champion cannot be scored there, passes its
recorded figure and says so in ``champion_note``). The decision and its reason are written as tags
on the model version, so the registry itself explains why an alias moved or did not.
"""

from dataclasses import dataclass

import mlflow
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

CHALLENGER, CHAMPION = "challenger", "champion"


@dataclass(frozen=True)
class Decision:
    promoted: bool
    reason: str
    challenger_version: str
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
) -> Decision:
    """Move ``champion`` to the challenger if it has a strictly higher AUPRC (or there is no champion)."""
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
    if promoted:
        client.set_registered_model_alias(name, CHAMPION, challenger.version)
    client.set_model_version_tag(name, challenger.version, "gate_decision", "promoted" if promoted else "rejected")
    client.set_model_version_tag(name, challenger.version, "gate_reason", reason)
    after = challenger.version if promoted else champion.version
    return Decision(promoted, reason, str(challenger.version), str(after))


def champion_auprc(
    client: MlflowClient, name: str, processed: str, split: str, cache_dir: str
) -> tuple[float | None, str]:
    """The current champion's AUPRC on ``split`` of ``processed``, by scoring it there with its own bundle.

    Returns (None, note) when there is no champion, and its recorded test AUPRC (with a note) when it
    was trained on another feature spec and so cannot be scored on these features.
    """
    from sklearn.metrics import average_precision_score

    from lib import scoring, train

    champion = current_champion(client, name)
    if champion is None:
        return None, "no champion yet"
    try:
        folder = scoring.download_registered_bundle(client.tracking_uri, name, CHAMPION, cache_dir)
        info, booster = scoring.load_bundle(folder)
    except scoring.BundleError as exc:
        recorded = champion.tags.get("test_auprc")
        return (float(recorded) if recorded else None), f"champion not re-scored: {exc}; used its recorded AUPRC"
    window = train.load_matrix(processed, split, info.feature_set)
    auprc = float(average_precision_score(window.y, booster.inplace_predict(window.X)))
    return auprc, f"champion v{champion.version} re-scored on this {split} window"
