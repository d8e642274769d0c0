"""Every bad model input is a domain error that names the file and says what to fix."""

from __future__ import annotations

import json
import pickle
import random
import zipfile
from pathlib import Path

import pytest
import torch
from protolens_server.engine.types import InputSpec
from protolens_server.errors import InvalidArgument, InvalidModel, ModelNotFound
from protolens_server.models import load_model
from tiny_nets_models import SIDECAR, SPEC, TinyNet, archive, example_input


def test_unknown_model_name_lists_builtins() -> None:
    with pytest.raises(ModelNotFound, match=r"no model 'resnet50'.*efficientnet_lite0"):
        load_model("resnet50")


def test_missing_file(tmp_path) -> None:
    with pytest.raises(ModelNotFound, match="no such model file"):
        load_model(f"torchscript:{tmp_path / 'gone.pt'}")


@pytest.mark.parametrize(
    ("fname", "content", "expected"),
    [
        ("notes.pt", b"hello, I am text", "not a TorchScript file"),
        ("junk.pt2", random.Random(0).randbytes(256), "not a torch.export .pt2 program"),
        ("junk.mar", b"PK but not really", "not a TorchServe .mar archive"),
        ("picture.png", b"\x89PNG\r\n", r"not a TorchScript \(\.pt/\.ts\), torch\.export"),
    ],
)
def test_files_that_are_not_models(tmp_path, fname, content, expected) -> None:
    path = tmp_path / fname
    path.write_bytes(content)
    with pytest.raises(InvalidModel, match=expected) as info:
        load_model(str(path), spec=SPEC)
    assert str(path) in str(info.value)


def test_state_dict_named_like_torchscript_gets_a_factory_hint(tmp_path, tiny_model) -> None:
    path = tmp_path / "weights.pt"
    torch.save(tiny_model.state_dict(), path)
    with pytest.raises(InvalidModel, match=r"not a TorchScript file.*factory:package\.module"):
        load_model(str(path))
    bare = tmp_path / "bare.pth"
    torch.save(tiny_model.state_dict(), bare)
    with pytest.raises(InvalidModel, match="a state dict needs its architecture"):
        load_model(str(bare))


def test_a_whole_pickled_module_is_named_as_such_and_never_unpickled(tmp_path, tiny_model) -> None:
    # torch.save(model) is how many people save a model; it is code, so it is refused, and
    # the message says how to save it instead (read from the pickle's opcodes only).
    marker = tmp_path / "unpickled"

    class Trap(torch.nn.Module):
        def __reduce__(self):  # would run on unpickling
            return (Path.touch, (marker,))

    whole = tmp_path / "model.pt"
    torch.save(tiny_model, whole)
    with pytest.raises(InvalidModel, match=r"whole module saved with torch\.save\(model\)") as info:
        load_model(str(whole))
    message = str(info.value)
    assert "TinyNet" in message and "torch.jit.script(model).save" in message
    assert "model.state_dict()" in message and "factory:package.module:function@PATH" in message
    trap = tmp_path / "trap.pt"
    torch.save(Trap(), trap)
    with pytest.raises(InvalidModel, match="whole module"):
        load_model(str(trap))
    assert not marker.exists()
    weights = tmp_path / "weights.pt"
    torch.save(tiny_model.state_dict(), weights)
    with pytest.raises(InvalidModel, match=r"it is a state dict saved with torch\.save\(\)"):
        load_model(str(weights))


def test_exported_program_under_a_torchscript_suffix_is_named(tmp_path, exported_path) -> None:
    path = tmp_path / "actually_export.pt"
    path.write_bytes(exported_path.read_bytes())
    with pytest.raises(InvalidModel, match=r"it is a torch.export program"):
        load_model(str(path))


def test_shape_mismatch_names_the_expected_shape(scripted_path) -> None:
    wrong = InputSpec(1, 16, 16, mean=(0.5,), std=(0.25,))
    with pytest.raises(InvalidModel, match=r"expected input 1x16x16.*--input-shape"):
        load_model(str(scripted_path), spec=wrong)


def test_non_2d_output(tmp_path) -> None:
    path = tmp_path / "feature_map.pt"
    torch.jit.script(torch.nn.Conv2d(3, 4, 3)).save(str(path))
    with pytest.raises(InvalidModel, match=r"output shape \(2, 4, 14, 14\).*\(2, num_classes\)"):
        load_model(str(path), spec=SPEC)


def test_static_batch_export_is_refused_with_the_fix(tmp_path, tiny_model) -> None:
    path = tmp_path / "static.pt2"
    torch.export.save(torch.export.export(tiny_model, (example_input(1),)), path)
    with pytest.raises(InvalidModel, match=r"only batch size 1.*dynamic_shapes"):
        load_model(str(path))


def test_class_name_count_must_match_outputs(scripted_path, tmp_path) -> None:
    with pytest.raises(InvalidArgument, match="has 3 class names but the model outputs 5"):
        load_model(str(scripted_path), spec=SPEC, class_names=["a", "b", "c"])
    model = tmp_path / "m.pt"
    model.write_bytes(scripted_path.read_bytes())
    (tmp_path / "m.json").write_text(json.dumps({**SIDECAR, "class_names": ["x", "y"]}))
    with pytest.raises(InvalidArgument, match=r"m\.json.*has 2 class names"):
        load_model(str(model))
    with pytest.raises(InvalidArgument, match=r"m\.json.*has 2 class names"):
        load_model(str(model), spec=SPEC)  # the names still come from the sidecar


def test_sidecar_errors_name_the_file_and_key(scripted_path, tmp_path) -> None:
    model = tmp_path / "m.pt"
    model.write_bytes(scripted_path.read_bytes())
    sidecar = tmp_path / "m.json"
    sidecar.write_text(json.dumps({"chanels": 3}))
    with pytest.raises(InvalidArgument, match=r"m\.json: chanels: is not a sidecar key"):
        load_model(str(model))
    sidecar.write_text("{not json")
    with pytest.raises(InvalidArgument, match="not valid JSON"):
        load_model(str(model))
    sidecar.write_text(json.dumps({"channels": 3, "std": [0, 1, 1]}))
    with pytest.raises(InvalidArgument, match="std must be > 0"):
        load_model(str(model))


def test_mar_handler_and_model_file_are_never_run(tmp_path, scripted_path, state_dict_path):
    marker = tmp_path / "HANDLER_RAN"
    code = f"open({str(marker)!r}, 'w').write('ran')\n"
    handler = tmp_path / "evil_handler.py"
    handler.write_text(code)
    mar = archive(
        tmp_path / "a",
        "evil",
        scripted_path,
        handler=str(handler),
        extra={"input_spec.json": SIDECAR},
    )
    assert zipfile.ZipFile(mar).read("evil_handler.py").decode() == code
    h = load_model(str(mar))
    h.module(example_input(2))
    assert h.metadata["mar_handler_not_run"] == "evil_handler.py"
    # An eager archive: its model file is code too, so without a factory we refuse.
    model_file = tmp_path / "evil_model.py"
    model_file.write_text(code + "import torch\nclass Net(torch.nn.Module):\n    pass\n")
    eager = archive(
        tmp_path / "b", "eager", state_dict_path, handler=str(handler), model_file=model_file
    )
    with pytest.raises(InvalidModel, match=r"never runs code from an archive.*factory:"):
        load_model(str(eager))
    assert not marker.exists()


def test_mar_without_manifest_or_serialized_file(tmp_path) -> None:
    plain = tmp_path / "plain.mar"
    with zipfile.ZipFile(plain, "w") as zf:
        zf.writestr("model.pt", b"x")
    with pytest.raises(InvalidModel, match=r"no MAR-INF/MANIFEST.json"):
        load_model(str(plain))
    broken = tmp_path / "broken.mar"
    with zipfile.ZipFile(broken, "w") as zf:
        zf.writestr("MAR-INF/MANIFEST.json", json.dumps({"model": {"serializedFile": "m.pt"}}))
    with pytest.raises(InvalidModel, match=r"the archive has no 'm.pt'"):
        load_model(str(broken))


class _Payload:
    """Unpickling this would run code; weights_only loading must refuse it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "ran"))


def test_state_dict_loading_never_unpickles_code(tmp_path) -> None:
    marker = tmp_path / "PICKLE_RAN"
    weights = tmp_path / "evil.pth"
    torch.save(
        {"head.weight": torch.zeros(5, 8), "x": _Payload(marker)},
        weights,
        pickle_protocol=pickle.DEFAULT_PROTOCOL,
    )
    with pytest.raises(InvalidModel, match="weights_only"):
        load_model(f"factory:tiny_nets_models:tiny_net@{weights}", spec=SPEC)
    assert not marker.exists()


def test_whole_pickled_module_is_refused(tmp_path) -> None:
    weights = tmp_path / "module.pth"
    torch.save(TinyNet(), weights)
    with pytest.raises(InvalidModel, match="not a plain state dict"):
        load_model(f"factory:tiny_nets_models:tiny_net@{weights}", spec=SPEC)


@pytest.mark.parametrize(
    ("ref", "error", "expected"),
    [
        ("factory:no_such_pkg.mod:fn", ModelNotFound, "cannot import 'no_such_pkg.mod'"),
        ("factory:tiny_nets_models:nothing", ModelNotFound, "has no attribute 'nothing'"),
        ("factory:tiny_nets_models:broken_factory", InvalidModel, "factory exploded"),
        ("factory:tiny_nets_models:not_a_module", InvalidModel, "expected a torch.nn.Module"),
        ("factory:tiny_nets_models", InvalidArgument, "expected factory:package.module:function"),
    ],
)
def test_factory_errors(ref, error, expected) -> None:
    with pytest.raises(error, match=expected):
        load_model(ref, spec=SPEC)


def test_weights_that_do_not_fit_the_factory(tmp_path) -> None:
    weights = tmp_path / "other.pth"
    torch.save(TinyNet(num_classes=7).state_dict(), weights)
    with pytest.raises(InvalidModel, match=r"do not fit tiny_nets_models:tiny_net\(\)"):
        load_model(f"factory:tiny_nets_models:tiny_net@{weights}", spec=SPEC)
