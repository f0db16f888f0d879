"""Live promotion: ``registry promote --evidence live`` moves the champion alias only on labelled live
results that champion and challenger both scored (the stream scorers' ``/live`` windows), once enough
frauds are labelled; the decision and its evidence are tags on the challenger's version."""

from dataclasses import dataclass
from typing import Annotated, Any, Literal

import numpy as np
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from lib.config import CHALLENGER, CHAMPION
from lib.errors import ParameterError
from lib.model.registry import Decision, current_champion
from lib.quality import performance
from lib.serving.bundles import BundleStore


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


class Window(BaseModel):
    """A scorer's labelled live window, as ``/live`` answers it."""

    model_config = ConfigDict(extra="ignore")

    labels: list[Literal[0, 1]]  # a label of 7 is not 7 frauds
    probabilities: dict[str, list[Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]]]  # NaN is no AUPRC 1.0
    thresholds: dict[str, Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]]


class LiveAnswer(BaseModel):
    """A stream scorer's ``/live`` answer (``lib.stream.scorer.StreamScorer.evidence``)."""

    model_config = ConfigDict(extra="ignore")

    scorer: Annotated[str, Field(min_length=1, max_length=256)]  # the member, whatever address reached it
    roles: dict[str, Literal["champion", "challenger"]]
    window: Window


def live_evidence(answers: dict[str, dict[str, Any]], champion: str, challenger: str) -> LiveEvidence:
    """Pool the ``/live`` answers of stream scorers (``{address: answer}``): each answer checked (0/1 labels,
    probabilities in 0..1, one per label), each scorer counted once however many addresses name it; each
    must serve exactly this champion and challenger, or its window compares other models and is refused."""
    labels: list[int] = []
    first: list[float] = []
    second: list[float] = []
    thresholds: dict[str, float] = {}
    members: dict[str, str] = {}
    for address, raw in answers.items():
        try:
            answer = LiveAnswer.model_validate(raw)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:3])
            raise ParameterError(f"the stream scorer at {address} answered /live with {problems}") from None
        if answer.scorer in members:  # the same member named twice: its window counts once
            continue
        members[answer.scorer] = address
        roles = answer.roles
        if roles.get(champion) != CHAMPION or roles.get(challenger) != CHALLENGER:
            served = ", ".join(f"v{v} as {r}" for v, r in sorted(roles.items())) or "nothing yet"
            raise ParameterError(
                f"the stream scorer at {address} serves {served}, but the registry's champion is v{champion} and "
                f"its challenger v{challenger}: wait for it to reload the bundle store (--reload-interval), or "
                "check that it serves the store 05_evaluate publishes (--model data/bundles)"
            )
        window = answer.window
        for version in (champion, challenger):
            scored = window.probabilities.get(version, [])
            if len(scored) != len(window.labels) or version not in window.thresholds:
                raise ParameterError(
                    f"the stream scorer at {address}: v{version} has {len(scored)} probabilities for "
                    f"{len(window.labels)} labels{'' if version in window.thresholds else ' and no threshold'}"
                )
        labels += window.labels
        first += window.probabilities[champion]
        second += window.probabilities[challenger]
        thresholds.update(window.thresholds)
    as_array = lambda values: np.asarray(values, dtype=np.float64)  # noqa: E731
    return LiveEvidence(np.asarray(labels, dtype=np.int64), as_array(first), as_array(second), thresholds,
                        sorted(members.values()))  # fmt: skip


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
