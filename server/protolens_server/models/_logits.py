"""Logits out of whatever a classifier's ``forward`` returns.

Hugging Face models return a ``ModelOutput`` (a dict with attribute access),
others a plain dict or a tuple whose first item is the logits. The engine needs
a tensor: ``LogitsOnly`` wraps such a module and returns ``out["logits"]``. The
wrapped module sits under ``.model``, so its layers keep their names behind a
``model.`` prefix (forward hooks, the scorer's layer list).

The same wrapper adapts what else the load probe (``_build.check_forward``) finds
about a model that works but not as the engine calls it, each through an explicit
setting (``adapt``): weights in another float type (the input is cast to it and
the logits back to float32), an output with singleton dimensions ((N, C, 1, 1) from
a convolutional head, (N, 1, C): flattened to (N, C)), and a model that takes
channels-last images ((N, H, W, C), a converted TensorFlow model: the input is
permuted). A model that needs none of these is never wrapped.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

LOGITS_KEYS = ("logits", "logit", "scores", "output", "out")


def logits_of(out: Any) -> torch.Tensor | None:
    """The logits tensor in ``out`` (a tensor, a mapping or ``ModelOutput``, or a tuple
    whose first item is one), or None when there is none."""
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, Mapping):
        for key in LOGITS_KEYS:
            value = out.get(key)
            if isinstance(value, torch.Tensor):
                return value
        return None
    if isinstance(out, tuple | list) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    return None


def describe_output(out: Any) -> str:
    """What a forward returned, for an error message."""
    if isinstance(out, Mapping):
        return f"{type(out).__name__} with keys {sorted(map(str, out))[:8]}"
    return type(out).__name__


class LogitsOnly(torch.nn.Module):
    """``model`` whose output is reduced to its logits tensor (see ``logits_of``).

    ``input_dtype``: cast the input to it (the model's weights' float type) and the
    logits back to float32; ``flatten``: (N, C, 1, 1) or (N, 1, C) logits -> (N, C);
    ``channels_last_input``: the model takes (N, H, W, C) images.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        *,
        input_dtype: torch.dtype | None = None,
        flatten: bool = False,
        channels_last_input: bool = False,
    ) -> None:
        super().__init__()
        self.model = model
        self.input_dtype = input_dtype
        self.flatten = flatten
        self.channels_last_input = channels_last_input

    def settings(self) -> dict[str, Any]:
        return {
            "input_dtype": self.input_dtype,
            "flatten": self.flatten,
            "channels_last_input": self.channels_last_input,
        }

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last_input:
            x = x.permute(0, 2, 3, 1)
        if self.input_dtype is not None:
            x = x.to(self.input_dtype)
        out = self.model(x)
        logits = logits_of(out)
        if logits is None:
            raise TypeError(f"the model returned {describe_output(out)}: no logits tensor")
        if self.flatten:
            logits = logits.flatten(1)
        if self.input_dtype is not None:
            logits = logits.float()
        return logits


def adapt(module: Any, cls: type[LogitsOnly] = LogitsOnly, **settings: Any) -> LogitsOnly:
    """``module`` wrapped in ``cls`` with ``settings`` added to those it already has
    (a ``LogitsOnly`` is re-wrapped, never nested)."""
    if isinstance(module, LogitsOnly):
        settings = {**module.settings(), **settings}
    return cls(unwrap(module), **settings)


def flattenable(shape: tuple[int, ...]) -> bool:
    """(N, C, 1, 1), (N, 1, C), (N, C, 1): logits with singleton dimensions around them."""
    return len(shape) > 2 and sum(d != 1 for d in shape[1:]) <= 1


def unwrap(module: Any) -> Any:
    """The classifier inside a ``LogitsOnly`` (``module`` itself otherwise)."""
    return module.model if isinstance(module, LogitsOnly) else module
