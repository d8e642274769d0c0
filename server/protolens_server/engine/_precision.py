"""Frozen weights cast to bf16 once, for the bf16 autocast forward.

Under ``torch.autocast(dtype=bfloat16)`` every convolution and linear layer casts
its fp32 weight (and bias) to bf16 on *every* call: on a GPU at large batches those
copies were about a quarter of a ResNet-50 step's kernel time (issue 15's profile:
``aten::copy_`` 24.5%). The engine never trains the model, so the cast can happen
once: ``cast_frozen`` returns a copy whose convolution and linear weights are
already bf16, and autocast then finds nothing to cast.

Only the tensors autocast itself would cast are cast, with the same rounding
(``Tensor.to(bfloat16)``), so the forward computes exactly what it computed with
the per-call casts (``tests/engine/test_engine_precision.py`` checks bitwise
equality under CPU autocast): the weights of the standard ``nn.Conv1d/2d/3d`` and
``nn.Linear`` modules, and, in a graph traced by torch.fx (the BatchNorm-folded
copy, ``_fold.py``), the attributes used only as the weight or bias of a
functional ``conv``/``linear`` call (EfficientNet's static-padding convolutions).
Everything else stays as it was: normalisation layers and their statistics
(``FoldedBatchNorm``'s scale and shift, read by the BatchNorm prior in fp32), and
weights a model uses in its own arithmetic (e.g. a ``Conv2d`` subclass that
standardises its weight), where bf16 would round differently than before.

The copy is cached per source module (weakly), so a worker casts each model once.
"""

from __future__ import annotations

import copy
import weakref
from typing import Any

import torch
import torch.fx as fx
from torch import nn
from torch.nn import functional as F

# Exact types: a subclass may use its weight in its own arithmetic (fx traces through
# subclasses, so their functional calls are caught by the graph rule below instead).
_WEIGHT_MODULES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
_WEIGHT_FUNCTIONS = (F.conv1d, F.conv2d, F.conv3d, torch.conv2d, F.linear)
_cast: weakref.WeakKeyDictionary[nn.Module, dict[torch.dtype, nn.Module]] = (
    weakref.WeakKeyDictionary()
)


def cast_frozen(module: Any, dtype: torch.dtype = torch.bfloat16) -> Any:
    """A copy of ``module`` with its convolution/linear weights in ``dtype`` (cached),
    or ``module`` itself when there is nothing to cast (or it is not an eager module)."""
    if not isinstance(module, nn.Module) or isinstance(module, torch.jit.ScriptModule):
        return module
    per_dtype = _cast.setdefault(module, {})
    if dtype not in per_dtype:
        per_dtype[dtype] = _cast_copy(module, dtype) or module
    return per_dtype[dtype]


def cast_count(module: nn.Module, dtype: torch.dtype = torch.bfloat16) -> int:
    """How many parameters and buffers of ``module`` are ``dtype`` (for tests and logs)."""
    tensors = [*module.parameters(), *module.buffers()]
    return sum(1 for t in tensors if t.dtype == dtype)


def _cast_copy(module: nn.Module, dtype: torch.dtype) -> nn.Module | None:
    copied = copy.deepcopy(module)
    count = 0
    for sub in copied.modules():
        if type(sub) in _WEIGHT_MODULES:
            for name in ("weight", "bias"):
                count += _cast_attr(sub, name, dtype)
    if isinstance(copied, fx.GraphModule):
        for target in _functional_weights(copied.graph):
            owner_name, _, name = target.rpartition(".")
            owner = copied.get_submodule(owner_name) if owner_name else copied
            count += _cast_attr(owner, name, dtype)
    if not count:
        return None
    copied.eval()
    for p in copied.parameters():
        p.requires_grad_(False)
    return copied


def _cast_attr(owner: nn.Module, name: str, dtype: torch.dtype) -> int:
    value = getattr(owner, name, None)
    if not isinstance(value, torch.Tensor) or not value.is_floating_point():
        return 0
    if value.dtype == dtype:
        return 0
    cast = value.detach().to(dtype)
    if isinstance(value, nn.Parameter):
        setattr(owner, name, nn.Parameter(cast, requires_grad=False))
    elif name in owner._buffers:
        owner._buffers[name] = cast
    else:
        return 0
    return 1


def _functional_weights(graph: fx.Graph) -> set[str]:
    """Attribute targets whose every use is the weight or bias of a conv/linear call."""
    uses: dict[str, bool] = {}
    for node in graph.nodes:
        if node.op != "get_attr":
            continue
        ok = bool(node.users) and all(_weight_use(user, node) for user in node.users)
        uses[node.target] = uses.get(node.target, True) and ok
    return {target for target, ok in uses.items() if ok}


def _weight_use(user: fx.Node, node: fx.Node) -> bool:
    if user.op != "call_function" or user.target not in _WEIGHT_FUNCTIONS:
        return False
    args = list(user.args)
    if args and args[0] is node:  # the input itself
        return False
    positions = [*args[1:3], user.kwargs.get("weight"), user.kwargs.get("bias")]
    others = [*args[3:], *(v for k, v in user.kwargs.items() if k not in ("weight", "bias"))]
    return node in positions and node not in others
