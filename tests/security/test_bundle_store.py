"""A broken or tampered bundle store: every fault is a ``BundleError`` the reloader survives (the last good
model keeps serving, the app says why, the next valid version is picked up); paths stay inside the store;
a model.so is loaded only as ``FRAUD_COMPILED_MODELS`` says."""

import json
import logging
import shutil
import subprocess
import time

import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

from lib.config import Settings
from lib.serving import bundles, compiled, scoring
from lib.serving.api import create_app
from lib.serving.source import compiled_policy, resolve_model
from tests.conftest import bundle_info
from tests.serving.conftest import HEADERS, KEY


def edit_json(path, change):
    path.write_text(json.dumps(change(json.loads(path.read_text()))))


def raw(path, text: str):
    path.write_text(text)


# (what is wrong, how to break a published bundle folder); each must leave the last good version serving
BUNDLE_FAULTS = {
    "bundle.json not JSON": lambda b: raw(b / "bundle.json", "{not json"),
    "bundle.json empty": lambda b: raw(b / "bundle.json", ""),
    "bundle.json a list": lambda b: raw(b / "bundle.json", "[1, 2]"),
    "a missing key": lambda b: edit_json(b / "bundle.json", lambda m: {k: v for k, v in m.items() if k != "threshold"}),
    "compiled without machine": lambda b: edit_json(
        b / "bundle.json", lambda m: {**m, "compiled": {k: v for k, v in m["compiled"].items() if k != "machine"}}
    ),
    "compiled.file a path out of the bundle": lambda b: edit_json(
        b / "bundle.json", lambda m: {**m, "compiled": {**m["compiled"], "file": "../../evil.so"}}
    ),
    "compiled.file absolute": lambda b: edit_json(
        b / "bundle.json", lambda m: {**m, "compiled": {**m["compiled"], "file": "/tmp/evil.so"}}
    ),
    "threshold a word": lambda b: edit_json(b / "bundle.json", lambda m: {**m, "threshold": "high"}),
    "threshold above 1": lambda b: edit_json(b / "bundle.json", lambda m: {**m, "threshold": 7}),
    "model_version a path": lambda b: edit_json(b / "bundle.json", lambda m: {**m, "model_version": "1/../x"}),
    "model.ubj truncated": lambda b: (b / "model.ubj").write_bytes((b / "model.ubj").read_bytes()[:300]),
    "model.ubj empty": lambda b: (b / "model.ubj").write_bytes(b""),
    "model.ubj gone": lambda b: (b / "model.ubj").unlink(),
    "model.so altered": lambda b: (b / "model.so").write_bytes(b"\x7fELF" + b"\0" * 64),
    "model.so not a library, its checksum updated": lambda b: (
        (b / "model.so").write_bytes(b"\x7fELF" + b"\0" * 64),
        edit_json(
            b / "bundle.json", lambda m: {**m, "compiled": {**m["compiled"], "sha256": compiled.sha256(b / "model.so")}}
        ),
    ),
}
STORE_FAULTS = {
    "aliases.json a list": lambda s: raw(s / "aliases.json", '["1"]'),
    "aliases.json a string": lambda s: raw(s / "aliases.json", '"1"'),
    "aliases.json a number": lambda s: raw(s / "aliases.json", "1"),
    "aliases.json not JSON": lambda s: raw(s / "aliases.json", "{"),
    "an alias out of the store": lambda s: raw(s / "aliases.json", json.dumps({"champion": "1/../../outside/evil"})),
    "an alias naming no published version": lambda s: raw(s / "aliases.json", json.dumps({"champion": "9"})),
    "no champion": lambda s: raw(s / "aliases.json", json.dumps({"challenger": "1"})),
}


@pytest.fixture
def store(tmp_path, bundle):
    """A store serving v1 (the test bundle, with model.so), with a v2 published from the same model."""
    store = bundles.BundleStore(tmp_path / "bundles")
    booster = scoring.load_bundle(bundle)[1]
    for version in ("1", "2"):
        store.publish(
            scoring.export_bundle(tmp_path / f"b{version}", booster, bundle_info(model_version=version)), version
        )
    store.set_aliases(champion=1)
    return store


@pytest.mark.parametrize("fault", sorted(BUNDLE_FAULTS))
def test_a_broken_new_version_leaves_the_last_good_one_serving(store, fault):
    models = bundles.LiveModels(store, reload_interval=0.01)
    BUNDLE_FAULTS[fault](store.bundle(2))
    store.set_aliases(champion=2)
    assert not models.check() and models.current.versions == ("1", None), fault
    assert (models.failure and "v2" in models.failure) or "bundles/v2" in models.failure, models.failure
    shutil.rmtree(store.bundle(2))  # the operator republishes v2 whole
    booster = models.current.champion.booster
    store.publish(scoring.export_bundle(store.folder.parent / "fixed", booster, bundle_info(model_version="2")), 2)
    assert models.check() and models.current.versions == ("2", None) and models.failure is None


@pytest.mark.parametrize("fault", sorted(STORE_FAULTS))
def test_broken_aliases_leave_the_last_good_version_serving(store, fault, tmp_path):
    (tmp_path / "outside" / "evil").mkdir(parents=True)
    shutil.copytree(store.bundle(2), tmp_path / "outside" / "evil", dirs_exist_ok=True)
    models = bundles.LiveModels(store, reload_interval=0.01)
    STORE_FAULTS[fault](store.folder)
    assert not models.check() and models.current.versions == ("1", None) and models.failure, fault
    store.set_aliases(champion=2, challenger=2) if fault != "no champion" else (
        store.folder / "aliases.json"
    ).write_text(json.dumps({"champion": "2"}))
    assert models.check() and models.current.versions == ("2", None)


def test_a_bundle_json_with_a_key_this_code_does_not_know_loads(store):
    """A newer exporter adding a field must not stop an older server."""
    edit_json(store.bundle(2) / "bundle.json", lambda m: {**m, "calibration": {"method": "isotonic"}})
    models = bundles.LiveModels(store, reload_interval=0.01)
    store.set_aliases(champion=2)
    assert models.check() and models.current.versions == ("2", None)


def test_the_api_keeps_serving_says_why_and_picks_up_the_next_valid_version(store, transactions, caplog):
    settings = Settings(api_keys=KEY, serving_model=str(store.folder), serving_reload_interval=0.05)
    registry = CollectorRegistry()
    with TestClient(create_app(settings, registry=registry)) as api, caplog.at_level(logging.INFO, logger="fraud.api"):
        deadline = time.monotonic() + 30
        while api.get("/readyz").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        BUNDLE_FAULTS["model.ubj truncated"](store.bundle(2))
        store.set_aliases(champion=2)
        time.sleep(0.5)  # several checks
        ready = api.get("/readyz").json()
        assert ready["status"] == "ready" and ready["model_version"] == "1" and "model.ubj" in ready["reload_failed"]
        assert api.post("/v1/predict", json=transactions[0], headers=HEADERS).json()["model_version"] == "1"
        assert registry.get_sample_value("fraud_model_reload_failing", {"source": "api"}) == 1
        failures = [r for r in caplog.records if r.getMessage() == "model_reload_failed"]
        assert len(failures) == 1  # said once, however many checks found the same fault
        shutil.rmtree(store.bundle(2))
        booster = scoring.load_bundle(store.bundle(1))[1]
        store.publish(scoring.export_bundle(store.folder.parent / "fixed", booster, bundle_info(model_version="2")), 2)
        deadline = time.monotonic() + 30
        while api.get("/readyz").json()["model_version"] != "2" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert api.get("/readyz").json() == {"status": "ready", "model_version": "2"}
        assert registry.get_sample_value("fraud_model_reload_failing", {"source": "api"}) == 0


def test_an_api_started_on_a_broken_store_serves_once_it_is_fixed(store, transactions):
    STORE_FAULTS["aliases.json a list"](store.folder)
    settings = Settings(api_keys=KEY, serving_model=str(store.folder), serving_reload_interval=0.05)
    with TestClient(create_app(settings)) as api:
        time.sleep(0.3)
        answer = api.get("/readyz")
        assert answer.status_code == 503 and "not an object of aliases" in answer.json()["reason"]
        store.set_aliases(champion=1)  # the publisher writes the aliases anew
        deadline = time.monotonic() + 30
        while api.get("/readyz").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert api.post("/v1/predict", json=transactions[0], headers=HEADERS).json()["model_version"] == "1"


EVIL = r"""
#include <stdio.h>
__attribute__((constructor)) static void planted(void) {
    FILE *f = fopen(MARK, "w"); if (f) { fputs("ran", f); fclose(f); }
}
"""


def tampered(store, tmp_path):
    """v2's model.so replaced by a library whose constructor runs code, its SHA-256 updated in bundle.json:
    what anyone who can write the store can do (docs/serving.md: who may write it)."""
    marker = tmp_path / "planted-code-ran"
    source = tmp_path / "evil.c"
    source.write_text(EVIL.replace("MARK", json.dumps(str(marker))))
    library = store.bundle(2) / "model.so"
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(library), str(source)], check=True)
    edit_json(
        store.bundle(2) / "bundle.json",
        lambda m: {**m, "compiled": {**m["compiled"], "sha256": compiled.sha256(library)}},
    )
    return marker


def test_a_planted_model_so_is_loaded_only_as_the_compiled_models_setting_says(store, tmp_path, bundle):
    genuine = scoring.read_info(store.bundle(1) / "bundle.json").compiled.sha256
    marker = tampered(store, tmp_path)
    for mode, registry_checksum in (("never", None), ("registry", lambda name, version: genuine), ("registry", None)):
        served = resolve_model(str(store.bundle(2)), Settings(compiled_models=mode), checksum=registry_checksum)
        assert served.current.champion.predictor == "xgboost" and not marker.exists(), mode  # the booster serves
    assert compiled_policy("registry", lambda name, version: genuine)(
        scoring.read_info(store.bundle(1) / "bundle.json")
    )
    # FRAUD_COMPILED_MODELS=bundle (the default) trusts bundle.json's checksum: the planted code runs. The
    # checksum proves the library is the one exported with that bundle.json, not who wrote the store.
    with pytest.raises(scoring.BundleError):  # a library without TL2cgen's predict: refused, but it has run
        resolve_model(str(store.bundle(2)), Settings(compiled_models="bundle"))
    assert marker.read_text() == "ran"
