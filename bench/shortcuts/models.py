"""The suite's architectures and the two normalisation conventions.

- ``cnn_bn``: four 3x3 conv layers with BatchNorm (max-pooling after the first two),
  global average pooling, a linear head;
- ``cnn``: the same without BatchNorm (the engine's BatchNorm prior has nothing to hold);
  its convolutions start from He (Kaiming) initialisation: without BatchNorm to
  rescale them, PyTorch's default init shrinks the activations layer by layer and
  the ``cnn`` underfit (clean accuracy 0.51-0.53 at the suite's recipe). With
  BatchNorm the weights' scale is normalised away, but larger initial weights slow
  AdamW's relative steps: ``cnn_bn`` keeps the default init;
- ``vit``: a small Vision Transformer (4x4 patches, a class token, pre-norm blocks), its
  attention written out in plain ops so ``torch.export`` keeps every layer.

``width`` scales the channels (CI uses a narrow CNN). Normalisation (``NORMS``):

- ``spec``: the network takes normalised input; the sidecar declares mean and std
  (the engine feeds ``(x - mean) / std``);
- ``model``: a ``Normalize`` layer is the network's first module and the sidecar
  declares mean 0, std 1 (the engine feeds pixels in [0, 1]).
"""

from __future__ import annotations

import torch
from torch import nn

ARCHS = ("cnn_bn", "cnn", "vit")
NORMS = ("spec", "model")
MEAN = (0.47, 0.47, 0.47)
STD = (0.22, 0.22, 0.22)


class Normalize(nn.Module):
    def __init__(self, mean: tuple[float, ...] = MEAN, std: tuple[float, ...] = STD) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def cnn(classes: int, *, batchnorm: bool, width: int = 24) -> nn.Module:
    chans = (3, width // 2, width, 2 * width, 2 * width)
    layers: list[nn.Module] = []
    for i in range(4):
        layers.append(nn.Conv2d(chans[i], chans[i + 1], 3, padding=1, bias=not batchnorm))
        if batchnorm:
            layers.append(nn.BatchNorm2d(chans[i + 1]))
        layers.append(nn.ReLU())
        if i in (0, 1):
            layers.append(nn.MaxPool2d(2))
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(chans[-1], classes)]
    if not batchnorm:  # He init keeps a plain ReLU stack's activations in scale
        for layer in layers:
            if isinstance(layer, nn.Conv2d):
                nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
                nn.init.zeros_(layer.bias)
    return nn.Sequential(*layers)


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        att = (q @ k.transpose(-2, -1)) * (d // self.heads) ** -0.5
        out = att.softmax(-1) @ v
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class Block(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ViT(nn.Module):
    def __init__(
        self, classes: int, *, size: int = 32, patch: int = 4, dim: int = 48, depth: int = 3
    ) -> None:
        super().__init__()
        tokens = (size // patch) ** 2
        self.embed = nn.Conv2d(3, dim, patch, stride=patch)
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos = nn.Parameter(torch.randn(1, tokens + 1, dim) * 0.02)
        self.blocks = nn.Sequential(*[Block(dim, heads=4) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.embed(x).flatten(2).transpose(1, 2)
        t = torch.cat([self.cls.expand(t.shape[0], -1, -1), t], dim=1) + self.pos
        return self.head(self.norm(self.blocks(t))[:, 0])


def build(arch: str, norm: str, classes: int, *, width: int = 24) -> nn.Module:
    """A fresh network; with ``norm="model"`` its first module normalises."""
    if arch not in ARCHS:
        raise ValueError(f"arch must be one of {', '.join(ARCHS)} (got {arch!r})")
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {', '.join(NORMS)} (got {norm!r})")
    if arch == "vit":
        net: nn.Module = ViT(classes, dim=2 * width)
    else:
        net = cnn(classes, batchnorm=arch == "cnn_bn", width=width)
    return nn.Sequential(Normalize(), net) if norm == "model" else net


def sidecar_spec(norm: str) -> dict[str, list[float]]:
    """The sidecar's mean and std for ``norm``."""
    if norm == "model":
        return {"mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]}
    return {"mean": list(MEAN), "std": list(STD)}


def model_input(images: torch.Tensor, norm: str) -> torch.Tensor:
    """What the network is fed for [0, 1] ``images`` under ``norm`` (the engine does the same)."""
    if norm == "model":
        return images
    mean = torch.tensor(MEAN).view(1, -1, 1, 1)
    std = torch.tensor(STD).view(1, -1, 1, 1)
    return (images - mean) / std
