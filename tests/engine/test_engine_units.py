"""Unit objectives: a channel, neuron or direction target makes that unit fire; sums and
differences weigh their terms; bad layers and units fail early, naming what exists."""

from __future__ import annotations

import pytest
import torch
from engine_nets import FAST, SPEC, tiny_net
from protolens_server.engine import (
    Classifier,
    Target,
    UnitTerm,
    check_units,
    generate,
    layer_shapes,
)
from protolens_server.engine._units import term_value
from protolens_server.errors import InvalidArgument

UNIT_FAST = FAST.replace(steps=24, bn_prior=0.0, hf_penalty=0.1)


def _activation(model: Classifier, image: torch.Tensor, layer: str) -> torch.Tensor:
    seen: dict[str, torch.Tensor] = {}
    sub = model.module.get_submodule(layer)  # type: ignore[union-attr]
    handle = sub.register_forward_hook(lambda _m, _i, out: seen.__setitem__("out", out))
    try:
        with torch.no_grad():
            model.module(SPEC.normalise(image[None]))
    finally:
        handle.remove()
    return seen["out"][0]


def _unit(*terms: UnitTerm) -> Target:
    return Target((), "unit", terms)


def test_layer_shapes_lists_layers_in_call_order_with_shapes(tiny: Classifier) -> None:
    shapes = dict(layer_shapes(tiny))
    assert shapes["features.0"] == (8, 32, 32)
    assert shapes["features.5"] == (16, 16, 16)
    assert shapes["head"] == (10,)
    names = [n for n, _ in layer_shapes(tiny)]
    assert names[-1] == "logits" and names.index("features.0") < names.index("features.6")


def test_channel_objective_raises_that_channel_above_the_others(tiny: Classifier) -> None:
    layer, channel = "features.5", 7  # a ReLU: activations >= 0
    (proto,) = generate(tiny, [_unit(UnitTerm(layer, "channel", channel))], UNIT_FAST, seed=3)
    act = _activation(tiny, proto.image, layer).mean(dim=(1, 2))
    start = _activation(tiny, torch.full(SPEC.shape, 0.5), layer).mean(dim=(1, 2))
    assert act[channel] > 2 * start[channel] + 0.1
    assert int(act.argmax()) == channel
    # the reported "logit" of a unit target is its objective value on the final image
    assert proto.logit == pytest.approx(float(act[channel]), rel=1e-3, abs=1e-4)
    assert proto.probability == 0.0


def test_neuron_objective_raises_the_neuron_at_its_position(tiny: Classifier) -> None:
    term = UnitTerm("features.2", "neuron", 3, position=(4, 20))
    (proto,) = generate(tiny, [_unit(term)], UNIT_FAST.replace(transforms="none"), seed=1)
    act = _activation(tiny, proto.image, "features.2")[3]
    assert float(act[4, 20]) >= float(act.mean()) + 3 * float(act.std())


def test_one_hot_direction_is_the_channel_objective(tiny: Classifier) -> None:
    one_hot = tuple(1.0 if c == 5 else 0.0 for c in range(16))
    a = generate(tiny, [_unit(UnitTerm("features.5", "direction", direction=one_hot))], FAST)
    b = generate(tiny, [_unit(UnitTerm("features.5", "channel", 5))], FAST)
    # the same loss; only the start perturbation differs (seeds derive from the target)
    assert a[0].logit == pytest.approx(b[0].logit, rel=0.05)
    act = torch.randn(2, 16, 4, 4)
    direction = term_value(act, UnitTerm("x", "direction", direction=one_hot))
    assert torch.allclose(direction, term_value(act, UnitTerm("x", "channel", 5)))


def test_difference_of_channels_separates_them(tiny: Classifier) -> None:
    plus = UnitTerm("features.5", "channel", 2)
    minus = UnitTerm("features.5", "channel", 9, weight=-1.0)
    (proto,) = generate(tiny, [_unit(plus, minus)], UNIT_FAST, seed=2)
    act = _activation(tiny, proto.image, "features.5").mean(dim=(1, 2))
    assert float(act[2] - act[9]) == pytest.approx(proto.logit, rel=1e-3, abs=1e-4)
    assert float(act[2] - act[9]) > 0.5
    (only_plus,) = generate(tiny, [_unit(plus)], UNIT_FAST, seed=2)
    act_plus = _activation(tiny, only_plus.image, "features.5").mean(dim=(1, 2))
    assert float(act[9]) < float(act_plus[9])


def test_unit_and_class_targets_batch_together_like_alone(tiny: Classifier) -> None:
    unit = _unit(UnitTerm("logits", "channel", 4), UnitTerm("features.8", "channel", 1))
    # A batch's float rounding differs from one image's by ~1e-7, which the total
    # variation's sign at exactly-equal neighbours (a near-constant start) can amplify
    # over steps: 8 steps, no channels_last (measured: equal to 1.2e-7 here; at 12
    # steps, or a 0.5 weight, some settings drift to 7e-3 for class targets and units alike)
    config = FAST.replace(channels_last=False, steps=8)
    together = generate(tiny, [3, unit], config, seed=5)
    alone = generate(tiny, [unit], config, seed=5)
    klass = generate(tiny, [3], config, seed=5, fold_batchnorm=False)  # as next to units
    torch.testing.assert_close(together[1].image, alone[0].image, atol=1e-4, rtol=0)
    torch.testing.assert_close(together[0].image, klass[0].image, atol=1e-4, rtol=0)
    assert together[1].target.label() == "layer:logits:channel:4+layer:features.8:channel:1"
    weighted = _unit(UnitTerm("head", "channel", 4), UnitTerm("head", "channel", 1, weight=-0.5))
    assert weighted.label() == "layer:head:channel:4-0.5*layer:head:channel:1"


@pytest.mark.parametrize(
    ("term", "words"),
    [
        (UnitTerm("features.99", "channel", 0), ["unknown layer 'features.99'", "features.0"]),
        (UnitTerm("features.5", "channel", 16), ["channel 16 does not exist", "0..15"]),
        (UnitTerm("features.5", "neuron", 1, (16, 0)), ["position (16, 0)", "(15, 15)"]),
        (UnitTerm("features.5", "direction", direction=(1.0, 2.0)), ["2 values", "16 channels"]),
    ],
)
def test_bad_units_name_the_layer_and_what_exists(
    tiny: Classifier, term: UnitTerm, words: list[str]
) -> None:
    with pytest.raises(InvalidArgument) as info:
        generate(tiny, [3, _unit(term)], FAST)
    assert "targets[1].units[0]" in str(info.value)
    for word in words:
        assert word in str(info.value)


def test_unit_targets_on_a_traced_program_may_only_name_logits() -> None:
    module = torch.export.export(tiny_net(), (torch.zeros(2, *SPEC.shape),)).module()
    model = Classifier(module, SPEC, 10)
    check_units(model, [_unit(UnitTerm("logits", "channel", 2))])
    with pytest.raises(InvalidArgument, match="eager PyTorch model"):
        check_units(model, [_unit(UnitTerm("features.0", "channel", 2))])


def test_unit_terms_check_their_own_shape() -> None:
    with pytest.raises(InvalidArgument, match="no classes"):
        Target((1,), "unit", (UnitTerm("head"),))
    with pytest.raises(InvalidArgument, match="non-zero"):
        UnitTerm("head", weight=0.0)
    with pytest.raises(InvalidArgument, match="only a neuron"):
        UnitTerm("head", "channel", 1, position=(1, 1))
