"""Logits out of whatever a classifier's ``forward`` returns.

Hugging Face models return a ``ModelOutput`` (a dict with attribute access),
others a plain dict or a tuple whose first item is the logits. The engine needs
a tensor: ``LogitsOnly`` wraps such a module and returns ``out["logits"]``. The
wrapped module sits under ``.model``, so its layers keep their names behind a
``model.`` prefix (forward hooks, the scorer's layer list).
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
    """``model`` whose output is reduced to its logits tensor (see ``logits_of``)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        logits = logits_of(out)
        if logits is None:
            raise TypeError(f"the model returned {describe_output(out)}: no logits tensor")
        return logits


def unwrap(module: Any) -> Any:
    """The classifier inside a ``LogitsOnly`` (``module`` itself otherwise)."""
    return module.model if isinstance(module, LogitsOnly) else module
