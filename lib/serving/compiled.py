"""The model compiled to native code by TL2cgen: one transaction scored in microseconds, not hundreds.

XGBoost's ``inplace_predict`` on one row is nearly all per-call set-up around a few microseconds of tree
walking (docs/benchmarks.md has the figures). At bundle export,
Treelite reads the booster, TL2cgen generates C for its trees, and ``gcc`` compiles it into
``model.so``, stored in the bundle with its SHA-256. Serving loads it with ``ctypes`` and calls the
generated ``predict(union Entry* data, int pred_margin, float* result)`` (TL2cgen's ``header.h``)
once per transaction, and ``predict_rows``, a loop over that same ``predict`` added to the generated
source, once per batch: no TL2cgen, Treelite or compiler is needed where it runs, and the library needs
only ``expf`` from glibc 2.27, so the Lambda package carries it too.

Bit for bit the booster's answers: TL2cgen writes each leaf as a double literal and adds the base
score last, so its sums differ from XGBoost's float32 sums (base score first) in the last bit for
most rows. Before compiling, the generated source is put in XGBoost's order with float literals
(``_as_xgboost_sums``), and the library is kept only if it gives the booster's probabilities exactly
on probe rows, one at a time and as a batch: a single transaction and a batch get the same probability
and the same decision. A batch costs a fifth of ``inplace_predict``'s time. A library exported before ``predict_rows`` leaves batches to the booster. Where the library
cannot be built (no TL2cgen or compiler, or generated code of a shape this module does not know) or
cannot be loaded (another platform), the bundle serves with the booster alone and says so; a library
whose checksum does not match is an error.
"""

import contextlib
import ctypes
import hashlib
import io
import json
import logging
import platform
import re
import shutil
import struct
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from pydantic import Field

from lib.errors import ServiceUnavailable
from lib.logs import stderr_to

log = logging.getLogger(__name__)

COMPILED_FILE = "model.so"


class CompiledModelError(ServiceUnavailable):
    """A bundle's compiled library is missing, altered, or made for another model."""


@dataclass(frozen=True)
class CompiledInfo:
    """``compiled`` in ``bundle.json``: the library's file (a bare name in the bundle's folder), its SHA-256, and
    the machine and compiler it was built with."""

    file: Annotated[str, Field(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$", max_length=128)]  # no path, no ..
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    machine: str
    compiler: str = ""
    features: int = 0
    equal_to_booster_on: int = 0


def machine() -> str:
    """Where a compiled library runs: the OS and the CPU architecture it was built for."""
    return f"{platform.system().lower()}-{platform.machine()}"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


_LEAF = re.compile(r"^(\s*result\[0\] \+= )(-?[0-9.]+(?:e[-+]?[0-9]+)?);$", re.M)
_BASE = re.compile(r"\n\s*// Apply base_scores\n\s*result\[0\] \+= (-?[0-9.]+(?:e[-+]?[0-9]+)?);\n")
_LEFT_AS_DOUBLE = re.compile(r"result\[0\] \+= -?[0-9.]+(?:e[-+]?[0-9]+)?;")
_START = "float* result) {\n  unsigned int tmp;\n"
# A batch: rows of the model's features (float32, row after row), each summed from 0 by the generated predict.
_PREDICT_ROWS = """
void predict_rows(union Entry* rows, long n, float* result) {
  const int32_t k = get_num_feature();
  for (long i = 0; i < n; ++i) {
    result[i] = 0.0f;
    predict(rows + i * k, 0, result + i);
  }
}
"""


def _as_xgboost_sums(source: str, base_margin: float | None = None) -> str:
    """TL2cgen's ``main.c`` summing as XGBoost does: base score first, then each tree's float32 leaf.

    ``base_margin``: the base score as XGBoost computes it (``_base_margin``); TL2cgen's literal otherwise."""
    base = _BASE.search(source)
    if base is None or source.count(_START) != 1:
        raise ValueError("TL2cgen generated code of an unknown shape (one binary target expected)")
    first = f"{base_margin!r}f" if base_margin is not None else f"(float){base.group(1)}"
    source = _BASE.sub("\n", source).replace(_START, f"{_START}  result[0] += {first};\n")
    source, leaves = _LEAF.subn(_as_float_literal, source)
    if not leaves or _LEFT_AS_DOUBLE.search(source):
        raise ValueError("TL2cgen generated leaves this module cannot rewrite")
    return source


def _as_float_literal(leaf: re.Match[str]) -> str:
    """A leaf's literal as a C float literal: ``0.25`` -> ``0.25f``, ``-0`` -> ``-0.0f`` (``-0f`` is not C)."""
    literal = leaf.group(2)
    return f"{leaf.group(1)}{literal}{'' if any(c in literal for c in '.e') else '.0'}f;"


def _base_margin(booster: Any) -> float | None:
    """The base margin XGBoost adds first, computed as XGBoost computes it: in float32, ``-log(1 / base_score -
    1)`` for ``binary:logistic``. TL2cgen computes it in double; the two differ in the last bit for many base
    scores (0.3, or the 0.3512 XGBoost estimated for one model), and so the probabilities did on some probe
    rows, and the bundle served without its compiled trees. None for another objective: TL2cgen's is used."""
    config = json.loads(booster.save_config())["learner"]
    base_score = config["learner_model_param"]["base_score"].strip("[]").split(",")
    if config["objective"]["name"] != "binary:logistic" or len(base_score) != 1:
        return None
    one, base = np.float32(1), np.float32(base_score[0])
    odds = one / base - one  # float32 arithmetic, as XGBoost's; then a correctly rounded log, as glibc's logf
    return float(-np.float32(np.log(np.float64(odds))))


def _probe_rows(booster: Any, n_features: int, rows: int = 4096) -> np.ndarray:
    """Rows that reach every side of every split: each feature drawn from its split values and their
    neighbours (seeded, so an export is reproducible)."""
    trees = json.loads(booster.save_raw("json"))["learner"]["gradient_booster"]["model"]["trees"]
    splits: list[list[float]] = [[] for _ in range(n_features)]
    for tree in trees:
        for feature, value, left in zip(
            tree["split_indices"], tree["split_conditions"], tree["left_children"], strict=True
        ):
            if left != -1:  # an inner node (a leaf's split_condition is its value)
                splits[feature].append(value)
    rng = np.random.default_rng(0)
    probe = np.zeros((rows, n_features), dtype=np.float32)
    for j, values in enumerate(splits):
        if values:
            at = np.array(values, dtype=np.float32)
            probe[:, j] = rng.choice(np.concatenate([at, np.nextafter(at, -np.inf), np.nextafter(at, np.inf)]), rows)
    return probe


def compile_booster(booster: Any, folder: Path) -> CompiledInfo | None:
    """Compile ``booster`` into ``folder/model.so``; its description for ``bundle.json``, or None (and why, logged)."""
    try:
        import tl2cgen
        import treelite
    except ImportError as exc:
        log.warning("bundle without a compiled model (%s): it serves with the XGBoost booster", exc)
        return None
    library = folder / COMPILED_FILE
    try:
        model = treelite.frontend.from_xgboost(booster)
        # TL2cgen's own Treelite (4.1) reads the model that treelite (4.8: the one that reads XGBoost 3) wrote
        # and says so on stderr; what it generated is held to the booster below, bit for bit
        with tempfile.TemporaryDirectory() as source, contextlib.redirect_stdout(io.StringIO()):
            with stderr_to(folder.parent / f".{folder.name}-tl2cgen.log") as native_log:
                tl2cgen.generate_c_code(model, source, params={})
            native_log.unlink(missing_ok=True)
            main = Path(source) / "main.c"
            main.write_text(_as_xgboost_sums(main.read_text(), _base_margin(booster)) + _PREDICT_ROWS)
            shutil.move(tl2cgen.create_shared("gcc", source), library)
        compiled = CompiledModel(library, int(model.num_feature))
        probe = _probe_rows(booster, int(model.num_feature))
        expected = booster.inplace_predict(probe)
        one_by_one = np.array([compiled.probability(row) for row in probe], np.float32)
        for how, got in (("one row at a time", one_by_one), ("as a batch", compiled.probabilities(probe))):
            differ = int(np.count_nonzero(got != expected))
            if differ:
                raise ValueError(f"{how}, it differs from the booster on {differ} of {len(probe)} probe rows")
    except Exception as exc:
        library.unlink(missing_ok=True)
        log.warning("bundle without a compiled model (TL2cgen: %s): it serves with the XGBoost booster", exc)
        return None
    return CompiledInfo(
        file=COMPILED_FILE,
        sha256=sha256(library),
        machine=machine(),
        compiler=f"tl2cgen {tl2cgen.__version__}, treelite {treelite.__version__}",
        features=int(model.num_feature),
        equal_to_booster_on=len(probe),
    )


class CompiledModel:
    """The compiled library of a bundle: ``probability(row)`` for one row of the bundle's features, and
    ``probabilities(matrix)`` for many (``batches`` is False for a library built before it could)."""

    def __init__(self, library: Path, n_features: int) -> None:
        lib = ctypes.CDLL(str(library))
        self._predict = lib.predict
        self._predict.restype = None
        self._predict.argtypes = (ctypes.c_char_p, ctypes.c_int, ctypes.c_void_p)  # bytes: read only
        self._rows: Any = getattr(lib, "predict_rows", None)
        if self._rows is not None:
            self._rows.restype = None
            self._rows.argtypes = (ctypes.c_void_p, ctypes.c_long, ctypes.c_void_p)
        self.batches = self._rows is not None
        if lib.get_num_feature() != n_features:
            raise CompiledModelError(
                f"{library}: compiled for {lib.get_num_feature()} features, the bundle has {n_features}"
            )
        self.n_features = n_features
        self._pack = struct.Struct(f"={n_features}f").pack  # a row as the C floats ``predict`` reads

    def probability(self, row: Sequence[float]) -> float:
        """The model's probability for one row (a sequence of floats, in the bundle's feature order)."""
        result = ctypes.c_float(0.0)  # per call (the API's threads share one model); every leaf is added to it
        self._predict(self._pack(*row), 0, ctypes.byref(result))
        return result.value

    def probabilities(self, matrix: Any) -> np.ndarray:
        """The model's probabilities (float32) for the rows of ``matrix`` (rows x the bundle's features)."""
        rows = np.ascontiguousarray(matrix, dtype=np.float32)
        if rows.ndim != 2 or rows.shape[1] != self.n_features:  # predict_rows would read past the end
            raise ValueError(f"expected rows of {self.n_features} features, got shape {rows.shape}")
        result = np.empty(len(rows), dtype=np.float32)  # each row's sum starts from 0 in predict_rows
        self._rows(rows.ctypes.data, len(rows), result.ctypes.data)
        return result


def load(folder: Path, described: CompiledInfo | None, n_features: int, trusted: bool = True) -> CompiledModel | None:
    """The bundle's compiled model, or None where there is none, it was built for another machine, or the
    library is not ``trusted`` (``lib.serving.scoring.CompiledPolicy``: the booster serves then)."""
    if not described or not trusted:
        return None
    library = folder / described.file
    if library.parent != folder or not library.is_file() or sha256(library) != described.sha256:
        raise CompiledModelError(
            f"{library}: missing, or its SHA-256 is not the {described.sha256[:12]}… that bundle.json records; "
            're-export the bundle (05_evaluate), or delete the "compiled" entry from bundle.json to serve with '
            "the booster"
        )
    if described.machine != machine():
        log.warning("%s was compiled for %s, this is %s: serving with the XGBoost booster", library,
                    described.machine, machine())  # fmt: skip
        return None
    try:
        return CompiledModel(library, n_features)
    except (OSError, AttributeError) as exc:  # not a library for this machine, or not one TL2cgen made
        raise CompiledModelError(f"{library} could not be loaded: {exc}") from None
