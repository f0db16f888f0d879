"""The scoring core: one serving bundle, the shared feature spec on NumPy, the native XGBoost booster.

Every scoring path (``python -m lib score``, the APIs, the stream, drift and the registry gate)
loads a bundle with ``load_bundle`` and scores with ``Scorer``. A bundle is a folder:
``bundle.json`` (model name and registry version, feature set and spec version, decision
threshold, training data hash) and ``model.ubj`` (XGBoost's own binary JSON; no pickle anywhere),
and where TL2cgen could build it, ``model.so``: the trees compiled to native code, recorded with its
checksum under ``compiled`` in ``bundle.json`` (``lib.serving.compiled``). A single transaction is
scored by the scalar feature path and the compiled trees; batches by NumPy and the compiled trees too
(the booster where there is no ``model.so``); all give the booster's probabilities bit for bit (tested
on 100,000 rows).
"""

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any, Protocol

import numpy as np
import xgboost as xgb
from pydantic import ConfigDict, Field, TypeAdapter, ValidationError

from lib import atomic, contract, features
from lib.errors import ServiceUnavailable
from lib.serving import compiled as compiled_model
from lib.serving.compiled import CompiledInfo

BUNDLE_FILE = "bundle.json"
MODEL_FILE = "model.ubj"
BUNDLE_ARTIFACT = "serving_bundle"  # 05_evaluate logs version N's bundle under serving_bundle/vN of its run


def bundle_artifact_path(version: str | int) -> str:
    """Where a registered version's bundle lives in its run (one run can back several versions)."""
    return f"{BUNDLE_ARTIFACT}/v{version}"


class BundleError(ServiceUnavailable):
    """A serving bundle is missing, incomplete or made for another feature spec."""


@dataclass(frozen=True)
class BundleInfo:
    """What a bundle says about its model (the ``bundle.json`` contract). Read by ``read_info``, which checks
    every field's type and bounds and ignores a field it does not know (a newer exporter may add one)."""

    __pydantic_config__ = ConfigDict(extra="ignore")

    model_name: str
    model_version: Annotated[str, Field(pattern=r"^[0-9]+$")]
    feature_set: str
    feature_spec_version: str
    features: list[str]
    threshold: Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]
    training_data_sha256: str
    candidate: str
    test_auprc: float | None = None
    created: str = ""
    compiled: CompiledInfo | None = None  # model.so: its checksum, the machine and compiler it was built with
    # model.ubj's SHA-256, checked before XGBoost parses it: a truncated file made XGBoost reserve 20+ GB (OOM-killed
    # the process) where it should have been refused; None in bundles exported before it was recorded
    model_sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")] | None = None


_INFO = TypeAdapter(BundleInfo)
CompiledPolicy = Callable[[BundleInfo], bool]  # whether to load a bundle's model.so (lib.serving.source)


def trust_bundle(info: BundleInfo) -> bool:
    """The default policy: a library whose SHA-256 is the one its bundle.json records is loaded (which proves it
    is the library exported with that bundle.json, not who wrote the folder: docs/serving.md)."""
    return True


def read_info(path: Path) -> BundleInfo:
    """``bundle.json`` as a ``BundleInfo``, or a ``BundleError`` that names the file and what is wrong."""
    try:
        return _INFO.validate_json(path.read_bytes())
    except OSError as exc:
        raise BundleError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'the file'}: {e['msg']}" for e in exc.errors()[:5])
        raise BundleError(f"{path}: not a valid bundle.json ({problems}); re-export the bundle (05_evaluate)") from None


def export_bundle(folder: str | Path, booster: xgb.Booster, info: BundleInfo, compile: bool = True) -> Path:
    """Write a bundle folder atomically (a failed export leaves the previous bundle); ``compile``: with model.so."""
    if list(info.features) != list(features.feature_names(info.feature_set)):
        raise BundleError(f"bundle features {info.features} are not the {info.feature_set!r} set of this spec")
    folder = Path(folder)
    stamped = {**asdict(info), "created": info.created or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    with atomic.staged_dir(folder) as tmp:
        tmp.mkdir(parents=True)
        booster.save_model(tmp / MODEL_FILE)
        stamped["model_sha256"] = compiled_model.sha256(tmp / MODEL_FILE)
        compiled = compiled_model.compile_booster(booster, tmp) if compile else None
        stamped["compiled"] = asdict(compiled) if compiled else None
        (tmp / BUNDLE_FILE).write_text(json.dumps(stamped, indent=2))
    return folder


def load_bundle(folder: str | Path) -> tuple[BundleInfo, xgb.Booster]:
    """Read a bundle and check that it was made for this code's feature spec."""
    folder = Path(folder)
    meta, model = folder / BUNDLE_FILE, folder / MODEL_FILE
    if not meta.exists() or not model.exists():
        raise BundleError(
            f"{folder}: not a serving bundle (needs {BUNDLE_FILE} and {MODEL_FILE}); run the pipeline through "
            "05_evaluate to export one (data/bundle), then point FRAUD_SERVING_MODEL (or --model) at its folder"
        )
    info = read_info(meta)
    if info.feature_spec_version != features.FEATURE_SPEC_VERSION:
        raise BundleError(
            f"{folder}: bundle was trained with feature spec {info.feature_spec_version}, this code computes "
            f"{features.FEATURE_SPEC_VERSION}; retrain (run_pipeline.py --from 02_preprocess) or check out the "
            "code that trained it"
        )
    if list(info.features) != list(features.feature_names(info.feature_set)):
        raise BundleError(f"{meta}: features {info.features} are not the {info.feature_set!r} set of this spec")
    if info.model_sha256 is not None and compiled_model.sha256(model) != info.model_sha256:
        raise BundleError(f"{model}: its SHA-256 is not the {info.model_sha256[:12]}… that {meta.name} records "
                          "(truncated or altered since the export); export the bundle again")  # fmt: skip
    try:
        booster = xgb.Booster(model_file=str(model))
    except xgb.core.XGBoostError as exc:
        raise BundleError(f"{model}: not a model XGBoost can load ({str(exc).splitlines()[0][:200]})") from None
    if booster.num_features() != len(info.features):
        raise BundleError(
            f"{model}: a model of {booster.num_features()} features, bundle.json names {len(info.features)}"
        )
    booster.set_param({"nthread": 1})  # per-request predictions: no thread-pool start-up per call
    return info, booster


Explain = contract.Explain


class Model(Protocol):
    """What scores: a bundle's ``Scorer``, or ``lib.serving.remote.HttpScorer`` (an API's batch route)."""

    @property
    def info(self) -> BundleInfo: ...

    def score_columns(self, columns: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]: ...

    def assess(
        self, columns: dict[str, np.ndarray], explain: Explain = "alerts"
    ) -> tuple[np.ndarray, np.ndarray, contract.Explained]: ...

    def score_batch(self, columns: dict[str, np.ndarray], ids: list[Any], explain: Explain = "alerts") -> list[Any]: ...

    def score_records(self, records: list[dict[str, Any]], explain: Explain = "alerts") -> list[Any]: ...


@dataclass(frozen=True)
class Served:
    """What an app scores with: the champion, and a challenger in shadow (None: no shadow)."""

    champion: Model
    challenger: Model | None = None

    @property
    def versions(self) -> tuple[str, str | None]:
        return self.champion.info.model_version, self.challenger.info.model_version if self.challenger else None


class Scorer:
    """Scores raw transactions (column arrays or dicts), or a feature matrix of the spec, with one bundle.

    As a model source (``lib.serving.source.ModelSource``) it serves itself alone: ``current`` never changes.
    """

    reload_interval: float | None = None  # a bundle folder never changes under a Scorer
    failure: str | None = None

    def __init__(self, info: BundleInfo, booster: xgb.Booster, compiled: compiled_model.CompiledModel | None = None):
        self.info = info
        self.booster = booster
        self.compiled = compiled
        self.predictor = "tl2cgen" if compiled else "xgboost"  # what scores a single transaction
        self.current = Served(self)

    def check(self) -> bool:
        """Nothing to reload: a bundle folder's model is what it is."""
        return False

    @classmethod
    def from_folder(cls, folder: str | Path, trusted: CompiledPolicy = trust_bundle) -> "Scorer":
        """The bundle in ``folder``; its model.so is loaded when ``trusted(info)`` says so (else the booster)."""
        info, booster = load_bundle(folder)
        try:
            compiled = compiled_model.load(Path(folder), info.compiled, len(info.features), bool(trusted(info)))
        except compiled_model.CompiledModelError as exc:
            raise BundleError(str(exc)) from None
        return cls(info, booster, compiled)

    def score_features(self, matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(fraud_probability float64, is_fraud bool) for a matrix of the bundle's features, in its order."""
        rows = np.asarray(matrix, dtype=np.float32)
        if self.compiled and self.compiled.batches:
            probability = self.compiled.probabilities(rows).astype(np.float64)
        else:
            probability = self.booster.inplace_predict(rows).astype(np.float64)
        return probability, self.decide(probability)

    def decide(self, probability: Any) -> Any:
        """The decision rule, for one probability (a float) or many (an array): at or above the threshold."""
        return probability >= self.info.threshold

    def score_columns(self, columns: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """(fraud_probability float64, is_fraud bool) for raw column arrays."""
        return self.score_features(features.compute(columns, self.info.feature_set))

    def assess(
        self, columns: dict[str, np.ndarray], explain: Explain = "alerts"
    ) -> tuple[np.ndarray, np.ndarray, contract.Explained]:
        """(fraud_probability, is_fraud, the reasons of the rows ``explain`` names) for raw column arrays."""
        matrix = features.compute(columns, self.info.feature_set)
        probability, decision = self.score_features(matrix)
        return probability, decision, self.explain(matrix, _explained_rows(decision, explain))

    def explain(self, matrix: np.ndarray, rows: np.ndarray) -> contract.Explained:
        """The reasons of ``rows`` of a feature matrix (the one that was scored): per row, up to
        ``contract.TOP_REASONS`` features by TreeSHAP contribution toward fraud (the booster's ``pred_contribs``,
        which sum with the bias to the margin), the strongest first; a feature that pushed toward genuine is
        never a reason. The compiled trees score, the booster explains: both are the same trees."""
        if not len(rows):
            return {}
        explained = np.asarray(matrix, dtype=np.float64)[rows]
        contributions = self.contributions(explained)
        top = np.argsort(-contributions, axis=1, kind="stable")[:, : contract.TOP_REASONS]
        each = np.arange(len(top))[:, None]
        pushed, values = contributions[each, top].tolist(), explained[each, top].tolist()
        spec = features.spec(self.info.feature_set)
        return {
            row: [_reason(spec[j], v, c) for j, c, v in zip(order, pushes, shown, strict=True) if c > 0]
            for row, order, pushes, shown in zip(rows.tolist(), top.tolist(), pushed, values, strict=True)
        }

    def contributions(self, matrix: np.ndarray) -> np.ndarray:
        """Each feature's TreeSHAP contribution (log-odds) to each row's margin, the bias left out (rows x features)."""
        data = xgb.DMatrix(np.asarray(matrix, dtype=np.float32), nthread=1)
        return np.asarray(self.booster.predict(data, pred_contribs=True, validate_features=False))[:, :-1]

    def score_records(self, records: list[dict[str, Any]], explain: Explain = "alerts") -> list[Any]:
        """Validated raw transactions (dicts) -> one ``contract.PredictionRecord`` per transaction, in order."""
        if len(records) == 1 and self.compiled:
            record, feature_set = records[0], self.info.feature_set
            row = features.compute_one(record, feature_set)
            probability = float(self.compiled.probability(row))
            decision = self.decide(probability)
            reasons = self.explain(np.array([row], dtype=np.float64), _explained_rows(np.array([decision]), explain))
            return contract.predictions(self.info, [record.get("transaction_id")], [probability], [decision], reasons)
        return self.score_batch(
            features.columns_from_records(records), [r.get("transaction_id") for r in records], explain
        )

    def score_batch(self, columns: dict[str, np.ndarray], ids: list[Any], explain: Explain = "alerts") -> list[Any]:
        """Raw column arrays (``features.columns_from_records``) and their transactions' ids -> one answer each."""
        probability, decision, reasons = self.assess(columns, explain)
        return contract.predictions(self.info, ids, probability, decision, reasons)


def _explained_rows(decision: np.ndarray, explain: Explain) -> np.ndarray:
    """The rows whose decisions carry reasons."""
    if explain == "all":
        return np.arange(len(decision))
    return np.flatnonzero(decision) if explain == "alerts" else np.zeros(0, np.intp)


def _reason(feature: features.Feature, value: float, contribution: float) -> contract.Reason:
    says = feature.says_for(value)
    return {"code": says.code, "feature": feature.name, "text": says.sentence(value), "value": value,
            "contribution": contribution}  # fmt: skip
