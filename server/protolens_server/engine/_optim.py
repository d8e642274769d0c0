"""Adam with one learning rate per image: what lets images of a batch stop, cool down
and probe different rates independently, without leaving the device.

``torch.optim.Adam`` takes one rate per parameter tensor, and a batch of images is
one tensor. Here the rate is an ``(N,)`` device tensor, broadcast over each image's
parameters, so a batch can hold images at different rates (the learning-rate
finder's probes), images cooling down (rate falling to 0 over a few steps) and
images already finished (rate 0: their parameters no longer move), and the step
never reads a value back to the host. The update is elementwise, so an image's
trajectory does not depend on its batch.
"""

from __future__ import annotations

import torch

BETAS = (0.9, 0.999)
# Adam's epsilon, in units of the image's RMS gradient: a parameter whose gradient is
# a hundredth of the image's typical one moves slowly instead of at full rate on noise
# (a fixed epsilon is either negligible or dominant depending on the model's scale).
EPS = 1e-2
TINY = 1e-30


class PerImageAdam:
    """Adam (Kingma & Ba 2015, as ``torch.optim.Adam`` with default betas) over tensors
    whose first dimension is the image, with a per-image learning rate."""

    def __init__(self, tensors: list[torch.Tensor]) -> None:
        self.tensors = tensors
        self.m = [torch.zeros_like(t) for t in tensors]
        self.v = [torch.zeros_like(t) for t in tensors]
        self.t = 0

    @torch.no_grad()
    def step(self, grads: list[torch.Tensor] | tuple[torch.Tensor, ...], lr: torch.Tensor) -> None:
        """One update; ``lr`` is (N,) on the tensors' device (0 leaves an image as it is)."""
        self.t += 1
        b1, b2 = BETAS
        c1, c2 = 1 - b1**self.t, 1 - b2**self.t
        for p, g, m, v in zip(self.tensors, grads, self.m, self.v, strict=True):
            g = g.to(p.dtype)
            m.mul_(b1).add_(g, alpha=1 - b1)
            v.mul_(b2).addcmul_(g, g, value=1 - b2)
            v_hat = v / c2
            # epsilon relative to the image's own RMS gradient (scale-free across models)
            dims = tuple(range(1, p.dim()))
            eps = v_hat.mean(dim=dims, keepdim=True).sqrt_().mul_(EPS).add_(TINY)
            rate = lr.to(p.dtype).view(-1, *([1] * (p.dim() - 1))) / c1
            p.sub_(rate * m / (v_hat.sqrt_().add_(eps)))


class Adam:
    """``torch.optim.Adam`` with its defaults (betas 0.9, 0.999, eps 1e-8, no weight
    decay), op for op its single-tensor update, so the same steps give the same bits on
    CPU: for the equidistant start and isolation masks, which use a plain Adam.

    Not ``torch.optim.Adam`` itself: constructing any ``torch.optim.Optimizer`` imports
    ``torch._dynamo`` (about 1.5 s, the largest import of a cold ``protolens generate``,
    for a compiler the engine does not use unless asked to).
    """

    def __init__(self, tensors: list[torch.Tensor], lr: float, eps: float = 1e-8) -> None:
        self.tensors = list(tensors)
        self.lr = lr
        self.eps = eps
        self.m = [torch.zeros_like(t, memory_format=torch.preserve_format) for t in tensors]
        self.v = [torch.zeros_like(t, memory_format=torch.preserve_format) for t in tensors]
        self.t = 0

    @torch.no_grad()
    def step(self, grads: list[torch.Tensor] | tuple[torch.Tensor, ...]) -> None:
        """One update of every tensor by its gradient in ``grads``."""
        self.t += 1
        b1, b2 = BETAS
        step_size = self.lr / (1 - b1**self.t)
        c2_sqrt = (1 - b2**self.t) ** 0.5
        for p, g, m, v in zip(self.tensors, grads, self.m, self.v, strict=True):
            m.lerp_(g, 1 - b1)
            v.mul_(b2).addcmul_(g, g, value=1 - b2)
            denom = (v.sqrt() / c2_sqrt).add_(self.eps)
            p.addcdiv_(m, denom, value=-step_size)
