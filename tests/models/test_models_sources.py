"""Every model source loads a tiny model made here, with the same outputs and a stable digest."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from protolens_server.models import load_model
from protolens_server.models._digest import file_sha256, model_digest
from tiny_nets_models import CLASS_NAMES, CLASSES, SIDECAR, SIZE, SPEC, example_input


def assert_same_outputs(handle, reference: torch.nn.Module) -> None:
    x = example_input(4)
    with torch.no_grad():
        torch.testing.assert_close(handle.module(x), reference(x), rtol=1e-5, atol=1e-6)


def assert_frozen(handle) -> None:
    params = list(handle.module.parameters())
    assert params and not any(p.requires_grad for p in params)
    # Input gradients still flow (the engine needs them).
    x = example_input(2).requires_grad_(True)
    handle.module(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


@pytest.mark.parametrize("fixture", ["scripted_path", "traced_path"])
def test_torchscript_same_outputs_and_stable_digest(fixture, request, tiny_model) -> None:
    path: Path = request.getfixturevalue(fixture)
    h1 = load_model(str(path), spec=SPEC, class_names=CLASS_NAMES)
    h2 = load_model(f"torchscript:{path}", spec=SPEC, class_names=CLASS_NAMES)
    assert h1.format == "torchscript" and h1.source == f"torchscript:{path}"
    assert h1.input_spec == SPEC and h1.class_names == tuple(CLASS_NAMES)
    assert h1.num_classes == CLASSES
    assert h1.digest == h2.digest
    assert h1.metadata["weights_sha256"] == file_sha256(path)
    assert h1.digest == model_digest(file_sha256(path), SPEC)
    assert_same_outputs(h1, tiny_model)
    assert_frozen(h1)


def test_exported_program_keeps_layers_hookable(exported_path, tiny_model) -> None:
    h = load_model(str(exported_path), spec=SPEC)
    assert h.format == "exported" and h.program is not None
    assert isinstance(h.program, torch.export.ExportedProgram)
    assert_same_outputs(h, tiny_model)
    assert_frozen(h)
    # The submodule hierarchy survives, so forward hooks on inner layers fire.
    names = {n for n, _ in h.module.named_modules()}
    assert {"features", "head"} <= names
    seen = []
    hook = h.module.get_submodule("features").register_forward_hook(
        lambda _m, _i, out: seen.append(tuple(out.shape))
    )
    h.module(example_input(3))
    hook.remove()
    assert seen == [(3, 8, 1, 1)]
    assert load_model(f"export:{exported_path}", spec=SPEC).digest == h.digest


def test_exported_program_input_shape_comes_from_the_program(exported_path) -> None:
    h = load_model(str(exported_path))
    assert h.input_spec.shape == (3, SIZE, SIZE)
    assert h.metadata["input_spec"] == "program"
    assert h.class_names == tuple(f"class {i}" for i in range(CLASSES))


def test_mar_loads_serialized_torchscript_with_names_and_spec(mar_path, tiny_model) -> None:
    h = load_model(str(mar_path))
    assert h.format == "torchscript" and h.source == f"mar:{mar_path}"
    assert h.name == "tinymar"
    assert h.class_names == tuple(CLASS_NAMES)  # from index_to_name.json ["id", "name"]
    assert h.class_aliases[0] == ("n00000",)
    assert h.input_spec == SPEC  # from input_spec.json inside the archive
    assert h.metadata["weights_sha256"] == file_sha256(mar_path)
    assert h.metadata["mar_model_version"] == "1.0"
    assert_same_outputs(h, tiny_model)
    assert load_model(f"mar:{mar_path}").digest == h.digest


def test_mar_with_exported_program(tmp_path, exported_path, tiny_model) -> None:
    from tiny_nets_models import archive

    mar = archive(tmp_path, "exp", exported_path, extra={"input_spec.json": SIDECAR})
    h = load_model(str(mar))
    assert h.format == "exported" and h.input_spec == SPEC
    assert_same_outputs(h, tiny_model)


def test_factory_with_state_dict(state_dict_path, tiny_model) -> None:
    ref = f"factory:tiny_nets_models:tiny_net@{state_dict_path}"
    h1 = load_model(ref, spec=SPEC, class_names=CLASS_NAMES)
    h2 = load_model(ref, spec=SPEC, class_names=CLASS_NAMES)
    assert h1.format == "eager" and h1.name == "weights"
    assert not h1.module.training
    assert h1.digest == h2.digest
    assert_same_outputs(h1, tiny_model)
    assert_frozen(h1)


def test_factory_digest_follows_the_weights(tmp_path, tiny_model) -> None:
    from tiny_nets_models import trained_like

    a, b = tmp_path / "a.pth", tmp_path / "b.pth"
    torch.save(tiny_model.state_dict(), a)
    torch.save(trained_like(1).state_dict(), b)
    da = load_model(f"factory:tiny_nets_models:tiny_net@{a}", spec=SPEC).digest
    db = load_model(f"factory:tiny_nets_models:tiny_net@{b}", spec=SPEC).digest
    assert da != db
    # The same tensors saved again (new file bytes) keep the digest.
    c = tmp_path / "c.pth"
    torch.save({k: v.clone() for k, v in tiny_model.state_dict().items()}, c)
    assert load_model(f"factory:tiny_nets_models:tiny_net@{c}", spec=SPEC).digest == da


def test_digest_covers_the_input_spec(scripted_path) -> None:
    other = SPEC.__class__(3, SIZE, SIZE, mean=(0.4,), std=(0.25,))
    assert load_model(str(scripted_path), spec=SPEC).digest != (
        load_model(str(scripted_path), spec=other).digest
    )


def test_sidecar_beside_the_file_and_arguments_override_it(tmp_path, scripted_path) -> None:
    model = tmp_path / "fruit.pt"
    shutil.copy(scripted_path, model)
    (tmp_path / "fruit.json").write_text(
        json.dumps({**SIDECAR, "class_names": CLASS_NAMES, "description": "fruit"})
    )
    h = load_model(str(model))
    assert h.input_spec == SPEC and h.class_names == tuple(CLASS_NAMES)
    assert h.description == "fruit"
    renamed = ["a", "b", "c", "d", "e"]
    assert load_model(str(model), class_names=renamed).class_names == tuple(renamed)


def test_state_dict_file_with_factory_in_sidecar(tmp_path, state_dict_path, tiny_model) -> None:
    weights = tmp_path / "eager.pth"
    shutil.copy(state_dict_path, weights)
    (tmp_path / "eager.json").write_text(
        json.dumps({**SIDECAR, "factory": "tiny_nets_models:tiny_net"})
    )
    h = load_model(str(weights))
    assert h.format == "eager" and h.metadata["factory"] == "tiny_nets_models:tiny_net"
    assert_same_outputs(h, tiny_model)


def test_eager_mar_needs_and_uses_a_registered_factory(tmp_path, state_dict_path, tiny_model):
    from tiny_nets_models import archive

    model_file = tmp_path / "arch.py"
    model_file.write_text("import torch\nclass Net(torch.nn.Module):\n    pass\n")
    mar = archive(
        tmp_path,
        "eager",
        state_dict_path,
        model_file=model_file,
        extra={"input_spec.json": SIDECAR},
    )
    h = load_model(f"factory:tiny_nets_models:tiny_net@{mar}")
    assert h.format == "eager" and h.input_spec == SPEC
    assert_same_outputs(h, tiny_model)


def test_factory_without_weights_uses_its_own(tiny_model) -> None:
    h = load_model("factory:tiny_nets_models:trained_like", spec=SPEC)
    assert h.name == "trained_like" and h.source == "factory:tiny_nets_models:trained_like"
    assert_same_outputs(h, tiny_model)
    assert load_model("factory:tiny_nets_models:trained_like", spec=SPEC).digest == h.digest
