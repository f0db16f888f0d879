"""The bundle store: publishing, aliases, and the atomic swap of a whole pair while requests read it."""

import json
import threading

import pytest

from lib.serving import bundles, scoring
from lib.serving.scoring import BundleError
from tests.conftest import bundle_info


def test_the_store_swaps_a_whole_pair_and_keeps_serving_when_a_new_one_is_broken(tmp_path, bundle):
    store = bundles.BundleStore(tmp_path / "bundles")
    with pytest.raises(BundleError, match="not a bundle store"):
        store.aliases()
    store.publish(bundle, 1)
    with pytest.raises(BundleError, match="no bundle v2"):
        store.set_aliases(champion=2)
    store.set_aliases(champion=1)
    models = bundles.LiveModels(store, reload_interval=0.05)
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
