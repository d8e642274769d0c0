"""One forward pass of the model on [0,1] images, with the speed settings applied.

The model's preprocessing (``input_spec.normalise``) runs inside the
differentiable graph. On CUDA the forward runs under bf16 autocast and with
channels_last inputs when the config asks for them; both are ignored on other
devices (CPU bf16 is slower than fp32 on most CPUs, and the flags must not
change CPU results).
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from protolens_server.errors import InvalidModel

from .types import GenerationConfig, ImageClassifier


class ModelRunner:
    """Holds the model, its spec and the resolved speed flags for one ``generate`` call."""

    def __init__(
        self, model: ImageClassifier, config: GenerationConfig, device: torch.device
    ) -> None:
        self.module = model.module
        self.spec = model.input_spec
        self.num_classes = model.num_classes
        self.device = device
        self.autocast = config.autocast and device.type == "cuda"
        self.channels_last = config.channels_last and device.type == "cuda"
        if isinstance(self.module, nn.Module):
            self.module.to(device)
            if self.channels_last and not isinstance(self.module, torch.jit.ScriptModule):
                self.module.to(memory_format=torch.channels_last)

    def autocast_context(self) -> contextlib.AbstractContextManager[None]:
        if self.autocast:
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def logits(self, images01: torch.Tensor) -> torch.Tensor:
        """(N, K) float32 logits of a batch of [0,1] images (differentiable)."""
        x = self.spec.normalise(images01)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with self.autocast_context():
            out = self.module(x)
        if not isinstance(out, torch.Tensor) or out.shape != (images01.shape[0], self.num_classes):
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise InvalidModel(
                f"model returned {shape} for a batch of {images01.shape[0]} images; "
                f"expected logits of shape (N, {self.num_classes}): check the model's "
                "output and its number of classes"
            )
        return out.float()
