"""Frozen weights cast to bf16 once (engine/_precision.py): the same forward, no per-step casts.

The engine autocasts only on CUDA; these tests run the same code under CPU bf16 autocast
(``AUTOCAST_DEVICES`` extended to "cpu"), which casts weights exactly as CUDA's does.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import pytest
import torch
from engine_nets import FAST, SPEC, tiny_net
from protolens_server.engine import Classifier, _forward, generate
from protolens_server.engine._fold import FoldedBatchNorm, folded
from protolens_server.engine._precision import cast_count, cast_frozen
from test_engine_fold import MixedNet, _calibrated
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode


class _CastCounter(TorchDispatchMode):
    """Counts dtype casts to bf16 of tensors shaped like the given weights."""

    def __init__(self, shapes: set[tuple[int, ...]]) -> None:
        super().__init__()
        self.shapes, self.casts = shapes, 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        kwargs = kwargs or {}
        if func in (torch.ops.aten._to_copy.default, torch.ops.aten.to.dtype):
            src = args[0]
            dtype = kwargs.get("dtype", args[1] if len(args) > 1 else None)
            if dtype == torch.bfloat16 and tuple(src.shape) in self.shapes:
                self.casts += 1
        return func(*args, **kwargs)


def _weight_shapes(module: nn.Module) -> set[tuple[int, ...]]:
    return {tuple(p.shape) for p in module.parameters() if p.dim() >= 2}


def _logits(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        return module(x).float()


@pytest.mark.parametrize("fold", [False, True])
@pytest.mark.parametrize("make", [tiny_net, lambda: _calibrated(MixedNet())], ids=["tiny", "mixed"])
def test_cast_copy_computes_what_autocast_computes(make, fold: bool) -> None:  # type: ignore[no-untyped-def]
    source = make()
    net = folded(source) if fold else source
    before = {k: v.clone() for k, v in net.state_dict().items()}
    cast = cast_frozen(net)
    assert cast is not net and cast_frozen(net) is cast  # a copy, cached
    x = torch.randn(3, 3, 32, 32) if make is tiny_net else torch.randn(3, 3, 16, 16)
    assert torch.equal(_logits(cast, x), _logits(net, x))
    # the module it came from is unchanged, in values and dtypes
    for k, v in net.state_dict().items():
        assert v.dtype == before[k].dtype and torch.equal(v, before[k]), k
    # conv/linear weights are bf16; normalisation layers and folded statistics stay fp32
    assert cast_count(cast) > 0
    for m in cast.modules():
        if isinstance(m, (nn.BatchNorm2d, FoldedBatchNorm)):
            tensors = (*m.parameters(), *m.buffers())
            assert all(t.dtype == torch.float32 for t in tensors if t.is_floating_point())
        if type(m) in (nn.Conv2d, nn.Linear):
            assert m.weight.dtype == torch.bfloat16
    if fold and make is not tiny_net:  # the functional (static-padding) conv was cast too
        weights = [b for n, b in cast.named_buffers() if n.startswith("_protolens_folded_weight")]
        assert weights and all(w.dtype == torch.bfloat16 for w in weights)


def test_no_weight_casts_per_forward() -> None:
    net = folded(tiny_net())
    x = torch.randn(2, 3, 32, 32)
    shapes = _weight_shapes(net)
    cast = cast_frozen(net)  # the one cast, before counting
    with _CastCounter(shapes) as plain:
        _logits(net, x)
    with _CastCounter(shapes) as once:
        _logits(cast, x)
    assert plain.casts >= 4  # autocast re-casts every conv and linear weight
    assert once.casts == 0


@pytest.fixture
def cpu_autocast(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The engine's autocast path on this CPU (it autocasts only on CUDA by default)."""
    monkeypatch.setattr(_forward, "AUTOCAST_DEVICES", frozenset({"cuda", "cpu"}))
    yield


def test_generate_bf16_once_matches_fp32_and_batching(cpu_autocast: None) -> None:
    model = Classifier(tiny_net(), SPEC, 10)
    config = replace(FAST, steps=24)
    classes, seeds = [1, 4, 7], [11, 12, 13]
    fast = generate(model, classes, config, seed=seeds)
    fp32 = generate(model, classes, replace(config, autocast=False), seed=seeds)
    for a, b in zip(fast, fp32, strict=True):
        assert abs(a.probability - b.probability) <= 0.05, (a.probability, b.probability)
        assert a.probability > 0.5
    alone = generate(model, [classes[1]], config, seed=[seeds[1]])[0]
    assert abs(alone.probability - fast[1].probability) <= 0.05
    assert (alone.image - fast[1].image).abs().max() <= 0.05
    # the runner used the bf16 copy: the caller's module kept fp32 weights
    assert all(p.dtype == torch.float32 for p in model.module.parameters())
    runner = _forward.ModelRunner(model, config, torch.device("cpu"), fold_batchnorm=True)
    assert runner.autocast and cast_count(runner.module) > 0
    fp32_runner = _forward.ModelRunner(
        model, replace(config, autocast=False), torch.device("cpu"), fold_batchnorm=True
    )
    assert cast_count(fp32_runner.module) == 0
