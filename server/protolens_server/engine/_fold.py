"""Fold eval-mode BatchNorm layers into the convolutions that feed them.

In eval mode a BatchNorm layer is a per-channel affine map, ``y = a * z + b``
with ``a = gamma / sqrt(running_var + eps)`` and ``b = beta - a * running_mean``.
When its input ``z`` is the output of a convolution used nowhere else, the map
can be folded into that convolution's weight and bias: the model computes the
same function with one elementwise layer fewer in the forward and, more
importantly for prototype generation, in the backward. On this project's CPU the
BatchNorm forward and backward were about a fifth of an EfficientNet-Lite0 step.

The BatchNorm-statistics prior still needs the per-channel moments of ``z``, the
BatchNorm *input*. Each folded layer is therefore replaced by
``FoldedBatchNorm``, an identity that keeps ``a``, ``b`` and the running
statistics, so the probe can hook it and recover ``z``'s moments exactly:
``mean(z) = (mean(y) - b) / a`` and ``var(z) = var(y) / a**2``.

Folding needs the graph (which convolution feeds which BatchNorm), so it works
on what ``torch.fx.symbolic_trace`` can trace; anything else runs unfolded. It
is an execution detail: the same function up to float rounding, on a copy of
the model (the caller's module is never changed).
"""

from __future__ import annotations

import copy
import warnings
import weakref
from typing import Any

import torch
import torch.fx as fx
from torch import nn
from torch.nn import functional as F

_CONV_FUNCTIONS = (F.conv2d, torch.conv2d)
# Folded copies per source module (weakly held): a worker folds each model once.
_folded: weakref.WeakKeyDictionary[nn.Module, nn.Module | None] = weakref.WeakKeyDictionary()


class FoldedBatchNorm(nn.Module):
    """Where a folded BatchNorm stood: passes its input through, keeps its statistics."""

    def __init__(self, bn: nn.modules.batchnorm._BatchNorm, scale: torch.Tensor) -> None:
        super().__init__()
        shift = _bn_bias(bn) - scale * bn.running_mean.float()
        self.register_buffer("scale", scale.detach().clone())
        self.register_buffer("shift", shift.detach().clone())
        self.register_buffer("running_mean", bn.running_mean.detach().float().clone())
        self.register_buffer("running_var", bn.running_var.detach().float().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def input_moments(
        self, mean: torch.Tensor, var: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel moments of the BatchNorm input from those of its (folded) output."""
        return (mean - self.shift) / self.scale, var / (self.scale * self.scale)


def folded(module: Any) -> Any:
    """``module`` with its foldable BatchNorm layers folded (a cached copy), or ``module``."""
    if not isinstance(module, nn.Module) or isinstance(module, torch.jit.ScriptModule):
        return module
    if module not in _folded:
        _folded[module] = _fold(module)
    return _folded[module] or module


def _fold(module: nn.Module) -> nn.Module | None:
    try:
        with warnings.catch_warnings():  # torch's own deprecation noise (pytree, jit)
            warnings.simplefilter("ignore")
            gm = fx.symbolic_trace(copy.deepcopy(module))
    except Exception:  # data-dependent control flow and the like: run it as it is
        return None
    subs = dict(gm.named_modules())
    count = 0
    for node in list(gm.graph.nodes):
        bn = subs.get(node.target) if node.op == "call_module" else None
        if not _foldable_bn(bn) or len(node.args) != 1:
            continue
        conv = node.args[0]
        if not isinstance(conv, fx.Node) or len(conv.users) != 1:
            continue
        scale = bn.weight.detach().float() if bn.affine else torch.ones_like(bn.running_var)
        scale = scale / torch.sqrt(bn.running_var.float() + bn.eps)
        if not bool((scale.abs() > 1e-8).all()):  # a dead channel: z is not recoverable
            continue
        if _fold_into(gm, subs, conv, bn, scale, count):
            _replace_module(gm, node.target, FoldedBatchNorm(bn, scale))
            count += 1
    if not count:
        return None
    gm.graph.lint()
    gm.recompile()
    gm.eval()
    for p in gm.parameters():
        p.requires_grad_(False)
    return gm


def _foldable_bn(m: Any) -> bool:
    return (
        isinstance(m, nn.BatchNorm2d)
        and m.running_mean is not None
        and m.running_var is not None
        and not m.training
    )


def _bn_bias(bn: nn.modules.batchnorm._BatchNorm) -> torch.Tensor:
    if bn.affine and bn.bias is not None:
        return bn.bias.detach().float()
    return torch.zeros_like(bn.running_mean, dtype=torch.float32)


def _folded_params(
    weight: torch.Tensor, bias: torch.Tensor | None, bn: nn.Module, scale: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    dtype = weight.dtype
    w = weight.detach().float() * scale.view(-1, *([1] * (weight.dim() - 1)))
    b0 = bias.detach().float() if bias is not None else torch.zeros_like(scale)
    b = (b0 - bn.running_mean.float()) * scale + _bn_bias(bn)
    return w.to(dtype), b.to(dtype)


def _fold_into(
    gm: fx.GraphModule,
    subs: dict[str, nn.Module],
    conv: fx.Node,
    bn: nn.Module,
    scale: torch.Tensor,
    index: int,
) -> bool:
    """Fold ``scale``/shift into the convolution node ``conv``; False if it is not one."""
    if conv.op == "call_module" and type(subs.get(conv.target)) is nn.Conv2d:
        module = copy.deepcopy(subs[conv.target])
        w, b = _folded_params(module.weight, module.bias, bn, scale)
        module.weight = nn.Parameter(w, requires_grad=False)
        module.bias = nn.Parameter(b, requires_grad=False)
        _replace_module(gm, conv.target, module)
        return True
    if conv.op != "call_function" or conv.target not in _CONV_FUNCTIONS:
        return False
    args = list(conv.args)
    weight_node = args[1] if len(args) > 1 else conv.kwargs.get("weight")
    bias_node = args[2] if len(args) > 2 else conv.kwargs.get("bias")
    if not (isinstance(weight_node, fx.Node) and weight_node.op == "get_attr"):
        return False
    if bias_node is not None and not (
        isinstance(bias_node, fx.Node) and bias_node.op == "get_attr"
    ):
        return False
    weight = _attr(gm, weight_node.target)
    bias = _attr(gm, bias_node.target) if bias_node is not None else None
    if weight.dim() != 4 or weight.shape[0] != scale.numel():
        return False
    w, b = _folded_params(weight, bias, bn, scale)
    names = (f"_protolens_folded_weight_{index}", f"_protolens_folded_bias_{index}")
    for name, value in zip(names, (w, b), strict=True):
        gm.register_buffer(name, value)
    with gm.graph.inserting_before(conv):
        new_w = gm.graph.get_attr(names[0])
        new_b = gm.graph.get_attr(names[1])
    if len(args) > 1:
        args[1] = new_w
    if len(args) > 2:
        args[2] = new_b
    kwargs = dict(conv.kwargs)
    if "weight" in kwargs:
        kwargs["weight"] = new_w
    if len(args) <= 2:
        kwargs["bias"] = new_b
    conv.args, conv.kwargs = tuple(args), kwargs
    return True


def _attr(gm: fx.GraphModule, target: str) -> torch.Tensor:
    obj: Any = gm
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def _replace_module(gm: fx.GraphModule, target: str, new: nn.Module) -> None:
    parent_name, _, name = target.rpartition(".")
    parent = gm.get_submodule(parent_name) if parent_name else gm
    setattr(parent, name, new)
