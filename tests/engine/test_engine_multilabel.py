"""Multi-label models (one independent sigmoid per class): the objective and what a
probability is (engine/_readout.py). The model is ``testkit.multilabel_net``, a small
conv net trained here (about a second) on scenes where a boat is always on water: the
labels ``boat`` and ``water`` co-occur."""

from __future__ import annotations

import pytest
import torch
from protolens_server.api.testkit import MULTILABEL_CLASSES, multilabel_net
from protolens_server.engine import (
    Classifier,
    GenerationConfig,
    InputSpec,
    Target,
    generate,
    isolate,
    lr_key,
)
from protolens_server.engine import _objectives as obj

SPEC = InputSpec(3, 16, 16, mean=(0.5,), std=(0.25,))
BOAT, WATER, TREE, CAR = range(len(MULTILABEL_CLASSES))


@pytest.fixture(scope="module")
def net() -> torch.nn.Module:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return multilabel_net(sigmoid=False)  # type: ignore[return-value]
    finally:
        torch.set_num_threads(before)


def _multi(net: torch.nn.Module) -> Classifier:
    return Classifier(net, SPEC, len(MULTILABEL_CLASSES), multi_label=True)


def _logits(net: torch.nn.Module, image: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return net(SPEC.normalise(image[None].float()))[0]


def test_every_label_reaches_its_own_sigmoid_with_the_defaults(net: torch.nn.Module) -> None:
    """Defaults: the finder's rate, stopping on convergence. The reported probability and
    top-5 are each label's own sigmoid (they need not sum to 1), not a softmax."""
    protos = generate(_multi(net), range(len(MULTILABEL_CLASSES)), GenerationConfig(), seed=0)
    for proto in protos:
        (label,) = proto.target.classes
        z = _logits(net, proto.image)
        assert proto.multi_label
        assert proto.probability == pytest.approx(float(torch.sigmoid(z[label])), abs=1e-4)
        assert proto.probability >= 0.9
        assert proto.stop_reason == "converged" and proto.steps < 256
        for index, p in proto.top5:
            assert p == pytest.approx(float(torch.sigmoid(z[index])), abs=1e-4)
    # single-label reading of the same model: a softmax, rows summing to 1
    (single,) = generate(Classifier(net, SPEC, 4), [WATER], GenerationConfig(), seed=0)
    assert not single.multi_label
    assert sum(p for _, p in single.top5) == pytest.approx(1.0, abs=1e-4)


def test_a_co_occurring_label_is_left_alone_not_pushed_down(net: torch.nn.Module) -> None:
    """The model learned that a boat means water, so boat evidence raises ``water``: the
    log-odds objective keeps it in water's prototype (the model sees a boat there), the
    single-label margin makes water win against boat and removes it."""
    config = GenerationConfig()
    (ours,) = generate(_multi(net), [WATER], config, seed=0)
    (margin,) = generate(Classifier(net, SPEC, 4), [WATER], config, seed=0)
    boat_ours = float(torch.sigmoid(_logits(net, ours.image)[BOAT]))
    boat_margin = float(torch.sigmoid(_logits(net, margin.image)[BOAT]))
    assert boat_ours > 0.9, boat_ours
    assert boat_margin < 0.1, boat_margin


def test_the_objective_has_no_gradient_on_the_other_labels() -> None:
    """Per step: the margin pushes every other label down (in proportion to its softmax
    share); the log-odds leaves them alone, and keeps a constant pull on the target."""
    logits = torch.tensor([[4.0, 3.0, -1.0, -2.0], [12.0, 3.0, -1.0, -2.0]], requires_grad=True)
    weights = torch.zeros(2, 4)
    weights[:, 0] = 1.0
    ctx = obj.StepContext(logits, torch.zeros(2, 3, 8, 8), torch.zeros(2))
    (ours,) = torch.autograd.grad(obj.target_log_odds(weights)(ctx).sum(), logits)
    (margin,) = torch.autograd.grad(obj.target_margin(weights)(ctx).sum(), logits)
    assert torch.equal(ours[:, 1:], torch.zeros(2, 3))
    assert torch.equal(ours[:, 0], torch.tensor([-1.0, -1.0]))  # as strong at p = 0.99999
    assert bool((margin[:, 1:] > 0).all())  # the loss rises with them: they are pushed down


def test_antitypes_and_hybrids_read_each_label_alone(net: torch.nn.Module) -> None:
    config = GenerationConfig(max_steps=96)
    anti, both = generate(
        _multi(net), [Target((WATER,), "antitype"), Target((TREE, CAR), "hybrid")], config
    )
    z = _logits(net, anti.image)
    assert anti.probability == pytest.approx(float(torch.sigmoid(z[WATER])), abs=1e-4)
    assert anti.probability < 0.1
    z = _logits(net, both.image)
    mean = float(torch.sigmoid(z[[TREE, CAR]]).mean())
    assert both.probability == pytest.approx(mean, abs=1e-4) and both.probability > 0.9


def test_the_learning_rate_finder_keys_a_multi_label_model_apart(net: torch.nn.Module) -> None:
    """Its probes run the multi-label objective, so its choice is its own; a
    single-label model's key is unchanged."""
    config = GenerationConfig()
    single = lr_key(Classifier(net, SPEC, 4), config, "cpu")
    assert lr_key(_multi(net), config, "cpu") != single
    assert '"multi_label"' not in single


def test_isolation_reads_the_label_s_own_sigmoid(net: torch.nn.Module) -> None:
    (proto,) = generate(_multi(net), [TREE], GenerationConfig(max_steps=64), seed=0)
    found = isolate(_multi(net), proto.image, TREE, seed=0)
    z = _logits(net, proto.image)
    assert found.probability == pytest.approx(float(torch.sigmoid(z[TREE])), abs=1e-4)
