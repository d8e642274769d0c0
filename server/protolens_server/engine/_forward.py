"""One forward pass of the model on [0,1] images, with the speed settings applied.

The model's preprocessing (``input_spec.normalise``) runs inside the
differentiable graph. With ``config.channels_last`` an eager module and its
inputs use the channels_last memory format (same numbers; about 10% faster per
step on this CPU too; the module is converted in place, which changes no
result). ``config.autocast`` runs the forward under bf16 autocast on CUDA only:
CPU bf16 is slower than fp32 on most CPUs and would change CPU results.
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
        self.channels_last = (
            config.channels_last
            and isinstance(self.module, nn.Module)
            and not isinstance(self.module, torch.jit.ScriptModule)
        )
        self._layout_checked = False
        self._affine_cache_key: tuple[torch.device, torch.dtype] | None = None
        self._affine_cache: tuple[torch.Tensor, torch.Tensor]
        if isinstance(self.module, nn.Module):
            self.module.to(device)
            if self.channels_last:
                self.module.to(memory_format=torch.channels_last)

    def autocast_context(self) -> contextlib.AbstractContextManager[None]:
        if self.autocast:
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def normalise(self, images01: torch.Tensor) -> torch.Tensor:
        """[0,1] images -> the model's input space, as one fused multiply-add."""
        scale, shift = self._affine(images01)
        return torch.addcmul(shift, images01, scale)

    def _affine(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        key = (like.device, like.dtype)
        if self._affine_cache_key != key:
            c = self.spec.channels
            mean = torch.tensor(self.spec.mean, dtype=torch.float64).expand(c)
            std = torch.tensor(self.spec.std, dtype=torch.float64).expand(c)
            scale = (1 / std).view(1, c, 1, 1).to(like.device, like.dtype)
            shift = (-mean / std).view(1, c, 1, 1).to(like.device, like.dtype)
            self._affine_cache = (scale, shift)
            self._affine_cache_key = key
        return self._affine_cache

    def logits(self, images01: torch.Tensor) -> torch.Tensor:
        """(N, K) float32 logits of a batch of [0,1] images (differentiable)."""
        return self.forward(self.normalise(images01))

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """(N, K) float32 logits of a batch already in the model's input space."""
        if self.channels_last and not self._layout_checked:
            self._layout_checked = True
            try:
                return self._forward(inputs)
            except torch.OutOfMemoryError:
                raise
            except RuntimeError:
                # e.g. ``x.view(n, -1)`` inside the model: it needs contiguous tensors
                self.channels_last = False
                self.module.to(memory_format=torch.contiguous_format)  # type: ignore[union-attr]
        return self._forward(inputs)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with self.autocast_context():
            out = self.module(x)
        if not isinstance(out, torch.Tensor) or out.shape != (x.shape[0], self.num_classes):
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise InvalidModel(
                f"model returned {shape} for a batch of {x.shape[0]} images; "
                f"expected logits of shape (N, {self.num_classes}): check the model's "
                "output and its number of classes"
            )
        return out.float()
