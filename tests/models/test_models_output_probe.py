"""Models that run but whose output gradient ascent cannot use as it is
(models/_probe_output.py; bench/unusual_models.py found each giving exit 0 or a traceback):
probabilities instead of logits, no input gradient, a random output."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from protolens_server.engine import generate
from protolens_server.engine.types import GenerationConfig, InputSpec, Target
from protolens_server.errors import InvalidModel
from protolens_server.models import load_model
from protolens_server.models._digest import model_digest
from torch import nn

SPEC = InputSpec(3, 16, 16, mean=(0.5,), std=(0.25,))


class _Net(nn.Module):
    """Conv, ReLU, mean, linear; ``head`` turns the logits into (log-)probabilities."""

    def __init__(self, head: str = "logits", dropout: float = 0.0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(8, 5)
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.fc(self.drop(torch.relu(self.conv(x)).mean((2, 3)))) * 4
        if self.head == "softmax":
            return torch.softmax(z, dim=1)
        if self.head == "log_softmax":
            return torch.log_softmax(z, dim=1)
        return z


class _Round(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = _Net()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(torch.round(x))


class _ArgmaxOneHot(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = _Net()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.net(x)
        return nn.functional.one_hot(z.argmax(1), 5).to(z.dtype) * 10


def _script(module: nn.Module, path: Path) -> str:
    torch.manual_seed(0)
    module = module.eval()
    torch.jit.script(module).save(str(path))
    return str(path)


def test_a_softmax_output_is_read_as_log_probabilities(tmp_path: Path) -> None:
    torch.manual_seed(0)
    logits_net = _Net().eval()
    soft = _Net("softmax").eval()
    soft.load_state_dict(logits_net.state_dict())
    torch.jit.script(soft).save(str(tmp_path / "soft.pt"))
    torch.jit.script(logits_net).save(str(tmp_path / "plain.pt"))
    handle = load_model(str(tmp_path / "soft.pt"), spec=SPEC)
    plain = load_model(str(tmp_path / "plain.pt"), spec=SPEC)
    assert handle.metadata["output"] == "log-probabilities"
    assert "output" not in plain.metadata
    x = SPEC.normalise(torch.rand(3, *SPEC.shape))
    with torch.no_grad():
        assert torch.allclose(torch.softmax(handle.module(x), 1), soft(x), atol=1e-6)
    # results cached for the model read as logits are not served for it
    assert handle.digest != model_digest(handle.metadata["weights_sha256"], SPEC)
    assert plain.digest == model_digest(plain.metadata["weights_sha256"], SPEC)
    # before: softmax of probabilities is at most e/(e+4) = 0.405 for five classes
    config = GenerationConfig(steps=32, lr=0.1, equidistant_steps=2)
    targets = [Target((c,)) for c in range(5)]
    ours = [p.probability for p in generate(handle, targets, config, seed=0)]
    theirs = [p.probability for p in generate(plain, targets, config, seed=0)]
    assert max(ours) > 0.5  # above the 0.405 ceiling of softmax(probabilities)
    assert ours == pytest.approx(theirs, abs=1e-3)


def test_log_softmax_outputs_are_logits_already(tmp_path: Path) -> None:
    torch.manual_seed(0)
    handle = load_model(_script(_Net("log_softmax"), tmp_path / "log.pt"), spec=SPEC)
    assert "output" not in handle.metadata


@pytest.mark.parametrize(
    ("module", "says"),
    [
        (_Round(), "gradient with respect to the input is zero"),
        (_ArgmaxOneHot(), "does not depend on the input through differentiable operations"),
    ],
)
def test_a_model_without_input_gradient_is_refused(
    tmp_path: Path, module: nn.Module, says: str
) -> None:
    torch.manual_seed(0)
    path = _script(module, tmp_path / "flat.pt")
    with pytest.raises(InvalidModel, match="gradient ascent") as caught:
        load_model(path, spec=SPEC)
    assert says in str(caught.value)


def test_dropout_traced_in_training_mode_is_refused(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = _Net(dropout=0.5).train()
    torch.jit.trace(net, torch.rand(2, *SPEC.shape)).save(str(tmp_path / "drop.pt"))
    with pytest.raises(InvalidModel, match="different outputs"):
        load_model(str(tmp_path / "drop.pt"), spec=SPEC)
    # scripted, the same module follows eval(): accepted
    torch.jit.script(net).save(str(tmp_path / "scripted.pt"))
    assert load_model(str(tmp_path / "scripted.pt"), spec=SPEC).num_classes == 5


def test_one_logit_is_refused_with_the_two_logit_fix(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 1))
    path = _script(net, tmp_path / "binary.pt")
    with pytest.raises(InvalidModel, match=r"1 logit.*torch.cat\(\[torch.zeros_like\(z\), z\]"):
        load_model(path, spec=SPEC)
