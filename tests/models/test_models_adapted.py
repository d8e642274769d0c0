"""Models that work, but not as the engine calls them, adapted at load (models/_logits.py
``adapt``; bench/unusual_models.py round 2): weights in half, bfloat16 or float64,
logits shaped (N, C, 1, 1) or (N, 1, C), channels-last input, a forward that changes
its input in place, one sigmoid per class; and the refusal of a forward that needs a
second input. Each is a real tiny model saved and loaded through the real loaders."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from protolens_server.engine import generate
from protolens_server.engine.types import Classifier, GenerationConfig, InputSpec, Target
from protolens_server.errors import InvalidModel
from protolens_server.models import load_model
from protolens_server.models._digest import model_digest
from torch import nn

SPEC = InputSpec(3, 16, 16, mean=(0.5,), std=(0.25,))
CONFIG = GenerationConfig(steps=24, lr=0.1, equidistant_steps=2)


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8 * 8 * 8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.bn(self.conv(x)))
        return self.fc(nn.functional.avg_pool2d(h, 2).flatten(1)) * 20


class _Shaped(nn.Module):
    def __init__(self, net: nn.Module, how: str) -> None:
        super().__init__()
        self.net, self.how = net, how

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.net(x)
        if self.how == "nc11":
            return z[:, :, None, None]
        if self.how == "n1c":
            return z[:, None, :]
        if self.how == "nc22":
            return z[:, :, None, None].expand(-1, -1, 2, 2)
        if self.how == "sigmoid":
            return torch.sigmoid(z)
        if self.how == "squashed":  # logits in [0, 1] on images, not on wild inputs
            return 0.5 + 0.01 * z
        if self.how == "inplace-softmax":
            return torch.softmax(z, dim=1)
        return z


class _InPlace(nn.Module):
    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x.mul_(2.0).relu_()
        return torch.softmax(self.net(x), dim=1)


class _Nhwc(nn.Module):
    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.permute(0, 3, 1, 2))


class _TwoInputs(nn.Module):
    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.net(x * mask)


class _Double(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x * 2.0).relu()


def _start_probability(net: nn.Module, target: int) -> float:
    with torch.no_grad():
        return float(net(_images(1) * 0).softmax(1)[0, target])


def _net() -> nn.Module:
    torch.manual_seed(0)
    net = _Net()
    with torch.no_grad():  # BatchNorm statistics that are not the identity
        net.bn.running_mean.uniform_(-0.2, 0.2)
        net.bn.running_var.uniform_(0.5, 2.0)
    return net.eval()


def _export(module: nn.Module, example: torch.Tensor, path: Path) -> str:
    program = torch.export.export(
        module, (example,), dynamic_shapes={"x": {0: torch.export.Dim("batch")}}
    )
    torch.export.save(program, str(path))
    return str(path)


def _images(n: int = 3) -> torch.Tensor:
    return SPEC.normalise(torch.rand(n, *SPEC.shape, generator=torch.Generator().manual_seed(1)))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("fmt", ["torchscript", "exported"])
def test_weights_in_another_float_type_are_fed_that_type(
    tmp_path: Path, dtype: torch.dtype, fmt: str
) -> None:
    net = _net()
    low = copy.deepcopy(net).to(dtype)
    if fmt == "torchscript":
        path = str(tmp_path / "m.pt")
        torch.jit.script(low).save(path)
    else:
        path = _export(low, torch.rand(2, *SPEC.shape, dtype=dtype), tmp_path / "m.pt2")
    handle = load_model(path, spec=SPEC)
    assert handle.metadata["weights_dtype"] == str(dtype).removeprefix("torch.")
    assert "output" not in handle.metadata  # the digest is that of any logits model
    assert handle.digest == model_digest(handle.metadata["weights_sha256"], SPEC)
    x = _images()
    with torch.no_grad():
        out = handle.module(x)
        want = low(x.to(dtype)).float()
    assert out.dtype == torch.float32 and torch.equal(out, want)
    tolerance = {torch.float64: 1e-5, torch.float16: 2e-2, torch.bfloat16: 1.5e-1}[dtype]
    assert torch.allclose(out, net(x), atol=tolerance)
    # input gradients flow as through the float32 model: the same prototype, up to rounding
    (proto,) = generate(handle, [Target((3,))], CONFIG, seed=0)
    (want_proto,) = generate(Classifier(net, SPEC, 5), [Target((3,))], CONFIG, seed=0)
    assert proto.probability == pytest.approx(want_proto.probability, abs=10 * tolerance)
    assert proto.probability > 2 * _start_probability(net, 3)


@pytest.mark.parametrize("how", ["nc11", "n1c"])
def test_logits_with_singleton_dimensions_are_flattened(tmp_path: Path, how: str) -> None:
    net = _net()
    path = str(tmp_path / "m.pt")
    torch.jit.script(_Shaped(net, how).eval()).save(path)
    handle = load_model(path, spec=SPEC)
    assert handle.num_classes == 5
    x = _images()
    with torch.no_grad():
        assert torch.equal(handle.module(x), net(x))
    assert handle.digest == model_digest(handle.metadata["weights_sha256"], SPEC)


def test_a_spatial_output_is_still_refused_naming_the_shape(tmp_path: Path) -> None:
    path = str(tmp_path / "m.pt")
    torch.jit.script(_Shaped(_net(), "nc22").eval()).save(path)
    with pytest.raises(InvalidModel, match=r"output shape \(2, 5, 2, 2\).*\(2, num_classes\)"):
        load_model(path, spec=SPEC)


def test_sigmoid_outputs_are_read_through_the_logit_function(tmp_path: Path) -> None:
    net = _net()
    path = str(tmp_path / "m.pt")
    torch.jit.script(_Shaped(net, "sigmoid").eval()).save(path)
    handle = load_model(path, spec=SPEC)
    assert handle.metadata["output"] == "multi-label" and handle.multi_label
    weights = handle.metadata["weights_sha256"]
    assert handle.digest == model_digest(weights, SPEC, "multi-label")
    assert handle.digest != model_digest(weights, SPEC)
    x = _images()
    with torch.no_grad():
        assert torch.allclose(handle.module(x), net(x), atol=1e-4)  # logit(sigmoid(z)) = z
    # the prototype of the model's own logits read as multi-label; its probability is the
    # model's own output for the label (read as single-label logits, the softmax of
    # sigmoids was at most e/(e+4) = 0.405)
    (proto,) = generate(handle, [Target((3,))], CONFIG, seed=0)
    (want,) = generate(Classifier(net, SPEC, 5, multi_label=True), [Target((3,))], CONFIG, seed=0)
    assert proto.probability == pytest.approx(want.probability, abs=1e-3)
    with torch.no_grad():
        own = _Shaped(net, "sigmoid")(SPEC.normalise(proto.image[None]))[0, 3]
    assert proto.probability == pytest.approx(float(own), abs=1e-4) and proto.probability > 0.9


def test_logits_inside_0_1_on_images_are_still_logits(tmp_path: Path) -> None:
    """0.5 + 0.01 z: in [0, 1] on the probe's images, not on wild inputs."""
    path = str(tmp_path / "m.pt")
    torch.jit.script(_Shaped(_net(), "squashed").eval()).save(path)
    handle = load_model(path, spec=SPEC)
    assert "output" not in handle.metadata


def test_a_forward_changing_its_input_in_place_is_probed_and_optimised(tmp_path: Path) -> None:
    """Before, the probe's first forward failed on its leaf input and skipped every check:
    this softmax output was read as logits."""
    net = _net()
    path = str(tmp_path / "m.pt")
    torch.jit.script(_InPlace(net).eval()).save(path)
    handle = load_model(path, spec=SPEC)
    assert handle.metadata["output"] == "log-probabilities"
    x = _images()
    with torch.no_grad():
        assert torch.allclose(
            handle.module(x.clone()), net((x * 2).relu()).log_softmax(1), atol=1e-5
        )
    # the engine's own input is changed in place every step: the same prototype as the
    # model without the in-place change
    plain = _Shaped(nn.Sequential(_Double(), net), "inplace-softmax").eval()
    torch.jit.script(plain).save(str(tmp_path / "plain.pt"))
    (proto,) = generate(handle, [Target((2,))], CONFIG, seed=0)
    (want,) = generate(
        load_model(str(tmp_path / "plain.pt"), spec=SPEC), [Target((2,))], CONFIG, seed=0
    )
    assert proto.probability == pytest.approx(want.probability, abs=1e-5)


@pytest.mark.parametrize("fmt", ["torchscript", "exported"])
def test_a_channels_last_model_is_fed_nhwc(tmp_path: Path, fmt: str) -> None:
    net = _net()
    nhwc = _Nhwc(net).eval()
    if fmt == "torchscript":
        path = str(tmp_path / "m.pt")
        torch.jit.script(nhwc).save(path)
        handle = load_model(path, spec=SPEC)
    else:  # C, H, W come from the program's (N, 16, 16, 3) input
        path = _export(nhwc, torch.rand(2, 16, 16, 3), tmp_path / "m.pt2")
        handle = load_model(path)
        assert handle.input_spec.shape == (3, 16, 16)
        handle = load_model(path, spec=SPEC)
    assert handle.metadata["input_layout"] == "NHWC"
    x = _images()
    with torch.no_grad():
        assert torch.equal(handle.module(x), net(x))


def test_a_forward_needing_a_second_input_is_refused_with_the_fix(tmp_path: Path) -> None:
    path = str(tmp_path / "m.pt")
    torch.jit.script(_TwoInputs(_net()).eval()).save(path)
    with pytest.raises(InvalidModel, match="missing value for argument 'mask'") as caught:
        load_model(path, spec=SPEC)
    assert "calls forward(x) with one batch of images" in str(caught.value)
    assert "input spec" not in str(caught.value)


def test_an_error_inside_torchscript_is_named_by_its_last_line(tmp_path: Path) -> None:
    path = str(tmp_path / "m.pt")
    torch.jit.script(_net()).save(path)
    with pytest.raises(InvalidModel, match=r"RuntimeError: Given groups=1, weight of size") as c:
        load_model(path, spec=InputSpec(1, 16, 16, mean=(0.5,), std=(0.25,)))
    assert "The following operation failed" not in str(c.value)
