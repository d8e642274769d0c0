"""Multi-label models through the loaders: a sigmoid per class is recognised, raw
multi-label logits are declared (``output: multi-label-logits`` in the sidecar, the
``output=`` argument, a transformers ``problem_type``), both read as one
``multi-label`` handle (metadata and digest), and the prototypes' probability is the
model's own sigmoid of the label. Bad declarations are ``InvalidArgument`` naming
``output``. The model is ``testkit.multilabel_net``, trained here (boat and water
co-occur)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from protolens_server.api.testkit import (
    MULTILABEL_SPEC,
    make_multilabel_model,
    multilabel_net,
)
from protolens_server.engine import GenerationConfig, generate
from protolens_server.engine.types import InputSpec
from protolens_server.errors import InvalidArgument
from protolens_server.models import load_model
from protolens_server.models._digest import model_digest

SPEC = InputSpec(3, 16, 16, mean=(0.5,), std=(0.25,))
BOAT, WATER = 0, 1


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        folder = tmp_path_factory.mktemp("multilabel")
        make_multilabel_model(folder, name="logits")  # sidecar declares multi-label-logits
        make_multilabel_model(folder, name="sigmoid", sigmoid=True)  # no declaration
        return folder
    finally:
        torch.set_num_threads(before)


def _own_output(path: Path, image: torch.Tensor) -> torch.Tensor:
    """What the saved model's own forward says of ``image``, as probabilities per label."""
    module = torch.jit.load(str(path))
    with torch.no_grad():
        out = module(SPEC.normalise(image[None].float()))[0]
    return out if out.min() >= 0 and out.max() <= 1 else torch.sigmoid(out)


@pytest.mark.parametrize("name", ["sigmoid", "logits"])
def test_both_roads_read_one_multi_label_model(store: Path, name: str) -> None:
    path = store / f"{name}.pt"
    handle = load_model(str(path))
    assert handle.multi_label and handle.metadata["output"] == "multi-label"
    how = "detected" if name == "sigmoid" else "declared"
    assert handle.metadata["multi_label"].startswith(how)
    weights = handle.metadata["weights_sha256"]
    assert handle.digest == model_digest(weights, SPEC, "multi-label")
    assert handle.digest != model_digest(weights, SPEC)
    # defaults (the finder's rate, stopping on convergence): every label is reached, and
    # the probability reported is the model's own output for the label
    protos = generate(handle, [BOAT, WATER, 2, 3], GenerationConfig(), seed=0)
    for proto in protos:
        (label,) = proto.target.classes
        own = _own_output(path, proto.image)
        assert proto.multi_label
        assert proto.probability == pytest.approx(float(own[label]), abs=1e-4)
        assert proto.probability >= 0.9, (name, label, proto.probability)
        assert proto.stop_reason == "converged"


def test_undeclared_logits_are_single_label_and_a_declaration_wins(store: Path) -> None:
    path = store / "logits.pt"
    undeclared = load_model(str(path), output="auto")  # the argument wins over the sidecar
    assert not undeclared.multi_label and "output" not in undeclared.metadata
    (proto,) = generate(undeclared, [WATER], GenerationConfig(steps=8), seed=0)
    assert not proto.multi_label
    assert sum(p for _, p in proto.top5) == pytest.approx(1.0, abs=1e-4)  # a softmax

    # declared by argument (the CLI's --model-output), the same handle as by the sidecar
    bare = store / "bare.pt"
    bare.write_bytes(path.read_bytes())
    (store / "bare.json").write_text(json.dumps(MULTILABEL_SPEC))
    declared = load_model(str(bare), output="multi-label-logits")
    assert declared.multi_label and declared.digest == load_model(str(path)).digest


def test_a_transformers_multi_label_problem_type_declares_it(tmp_path: Path) -> None:
    pytest.importorskip("transformers", reason="pip install 'protolens[hf]'")
    from protolens_server.api.testkit import make_tiny_vit

    folder = make_tiny_vit(tmp_path / "vit")
    assert not load_model(str(folder)).multi_label
    config = json.loads((folder / "config.json").read_text())
    config["problem_type"] = "multi_label_classification"
    (folder / "config.json").write_text(json.dumps(config))
    assert load_model(str(folder)).multi_label


def _bad(call: Callable[[], object], field: str) -> str:
    with pytest.raises(InvalidArgument) as caught:
        call()
    assert caught.value.field == field, caught.value
    assert caught.value.reason == "INVALID_ARGUMENT"
    return caught.value.message


def test_bad_declarations_name_the_field(store: Path, tmp_path: Path) -> None:
    logits = store / "logits.pt"
    message = _bad(lambda: load_model(str(logits), output="sigmoid"), "output")
    assert "'multi-label-logits'" in message and "'sigmoid'" in message

    # a sidecar's value, named with the sidecar's path
    path = tmp_path / "m.pt"
    path.write_bytes(logits.read_bytes())
    sidecar = path.with_suffix(".json")
    sidecar.write_text(json.dumps({**MULTILABEL_SPEC, "output": ["multi-label-logits"]}))
    message = _bad(lambda: load_model(str(path)), f"{sidecar}: output")
    assert "must be 'multi-label-logits'" in message

    # probabilities declared as logits: a sigmoid needs no declaration, a softmax is single-label
    sigmoid = store / "sigmoid.pt"
    message = _bad(lambda: load_model(str(sigmoid), output="multi-label-logits"), "output")
    assert "returns probabilities in [0, 1] (one sigmoid per class)" in message
    assert "remove the declaration" in message
    softmax = tmp_path / "softmax.pt"
    net = multilabel_net(sigmoid=False, steps=1)
    torch.jit.script(_Softmax(net)).save(str(softmax))
    softmax.with_suffix(".json").write_text(json.dumps(MULTILABEL_SPEC))
    message = _bad(lambda: load_model(str(softmax), output="multi-label-logits"), "output")
    assert "(a softmax)" in message and "single-label" in message

    # the built-in is single-label: a multi-label declaration is refused, not ignored
    message = _bad(lambda: load_model("efficientnet_lite0", output="multi-label-logits"), "output")
    assert "single-label" in message


class _Softmax(torch.nn.Module):
    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.net(x), dim=1)
