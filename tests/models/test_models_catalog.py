"""The service's model catalog: built-ins plus a store folder, names only, cached loads."""

from __future__ import annotations

import json
import shutil
import time

import pytest
import torch
from protolens_server.errors import InvalidArgument, InvalidModel, ModelNotFound
from protolens_server.models import ModelCatalog, resolve_class
from tiny_nets_models import CLASS_NAMES, SIDECAR, SPEC, example_input, trained_like


@pytest.fixture
def store(tmp_path, scripted_path, exported_path, mar_path, state_dict_path):
    root = tmp_path / "store"
    root.mkdir()
    shutil.copy(scripted_path, root / "fruit.pt")
    (root / "fruit.json").write_text(json.dumps({**SIDECAR, "class_names": CLASS_NAMES}))
    shutil.copy(mar_path, root / "archived.mar")
    shutil.copy(state_dict_path, root / "eager.pth")
    (root / "eager.json").write_text(
        json.dumps({**SIDECAR, "factory": "tiny_nets_models:tiny_net"})
    )
    for version in ("1", "2", "10"):
        folder = root / "vision" / version
        folder.mkdir(parents=True)
        shutil.copy(exported_path, folder / "model.pt2")
        (folder / "model.json").write_text(json.dumps({**SIDECAR, "description": f"v{version}"}))
    (root / "README.txt").write_text("not a model")
    return root


def test_names_and_versions(store) -> None:
    catalog = ModelCatalog(store)
    assert catalog.names() == [
        "archived", "eager", "efficientnet_lite0", "fruit", "vision@1", "vision@10", "vision@2",
    ]  # fmt: skip
    assert catalog.versions("vision") == ["1", "2", "10"]
    assert catalog.resolve("vision") == "vision@10"
    assert ModelCatalog(store, builtins=False).names()[:2] == ["archived", "eager"]
    assert "efficientnet_lite0" not in ModelCatalog(store, builtins=False).names()
    assert ModelCatalog(None).names() == ["efficientnet_lite0"]


def test_describe(store) -> None:
    catalog = ModelCatalog(store, builtins=False)
    info = catalog.describe("fruit")
    assert info.name == "fruit" and info.format == "torchscript"
    assert info.input_spec == SPEC and info.num_classes == 5
    assert info.class_names == tuple(CLASS_NAMES) and len(info.digest) == 64
    assert resolve_class(info, "Cherry") == 2
    latest = catalog.describe("vision")
    assert latest.name == "vision@10" and latest.version == "10" and latest.description == "v10"
    assert catalog.describe("vision@1").format == "exported"
    assert catalog.describe("archived").class_names == tuple(CLASS_NAMES)
    assert catalog.describe("eager").format == "eager"
    assert json.loads(json.dumps(info.to_dict()))["input_spec"]["height"] == SPEC.height


def test_load_is_cached_and_matches_the_model(store, tiny_model) -> None:
    catalog = ModelCatalog(store, builtins=False)
    h = catalog.load("vision@2")
    assert catalog.load("vision@2") is h
    assert catalog.load("vision@2", "cpu") is h
    assert h.name == "vision@2"
    x = example_input(3)
    torch.testing.assert_close(h.module(x), tiny_model(x), rtol=1e-5, atol=1e-6)
    assert catalog.describe("vision@2").digest == h.digest


def test_replaced_file_is_reloaded_with_a_new_digest(store, tmp_path) -> None:
    catalog = ModelCatalog(store, builtins=False)
    before = catalog.load("fruit")
    replacement = tmp_path / "other.pt"
    torch.jit.script(trained_like(7)).save(str(replacement))
    time.sleep(0.01)
    shutil.copy(replacement, store / "fruit.pt")
    after = catalog.load("fruit")
    assert after is not before and after.digest != before.digest
    assert catalog.describe("fruit").digest == after.digest


def test_lru_is_bounded_by_bytes(store) -> None:
    catalog = ModelCatalog(store, builtins=False, cache_bytes=1)
    first = catalog.load("fruit")
    catalog.load("archived")
    assert catalog.load("fruit") is not first  # evicted: only the newest is kept


@pytest.mark.parametrize(
    "name",
    ["../etc/passwd", "/tmp/model.pt", "fruit.pt", "vision/1", "vision@../1", "", "a b",
     "torchscript:/tmp/m.pt", "factory:os:getcwd"],
)  # fmt: skip
def test_paths_and_schemes_are_refused(store, name) -> None:
    catalog = ModelCatalog(store)
    with pytest.raises((InvalidArgument, ModelNotFound)) as info:
        catalog.load(name)
    if isinstance(info.value, ModelNotFound):  # "fruit.pt" is a valid-looking, unknown name
        assert name == "fruit.pt"


def test_unknown_names_list_what_exists(store) -> None:
    catalog = ModelCatalog(store)
    with pytest.raises(ModelNotFound, match=r"no model 'apple'.*fruit.*vision@10"):
        catalog.describe("apple")
    with pytest.raises(ModelNotFound, match="no model 'vision@3'"):
        catalog.load("vision@3")


def test_ambiguous_flat_entry(store, exported_path) -> None:
    shutil.copy(exported_path, store / "fruit.pt2")
    with pytest.raises(InvalidModel, match="several model files"):
        ModelCatalog(store).load("fruit")


def test_a_bad_model_in_the_store_fails_only_itself(store) -> None:
    (store / "broken.pt").write_text("not a model")
    catalog = ModelCatalog(store)
    assert "broken" in catalog.names()
    with pytest.raises(InvalidModel, match="not a TorchScript file"):
        catalog.load("broken")
    assert catalog.load("fruit").num_classes == 5
