"""Lucent (torch-lucent) run the way its users run it: one class per ``render_vis`` call.

Only the benchmark imports this, in its own environment (``bench/setup_bench_env.sh``);
the product never imports lucent or torchvision. Nothing here changes what Lucent
does: its default parameterisation (``param.image``: FFT + colour decorrelation), its
standard transforms, its Adam(lr=0.05), and a trainable model (Lucent does not freeze
parameters, so neither do we).
"""

from __future__ import annotations

import copy
import warnings

import numpy as np
import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def lucent_unavailable_reason() -> str | None:
    """None when Lucent imports here; otherwise one line saying why and how to get it."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import lucent.optvis.render  # noqa: F401
    except Exception as exc:  # ImportError, or torchvision/kornia failing to import
        return (
            f"Lucent column skipped: torch-lucent is not importable in this environment "
            f"({type(exc).__name__}: {exc}). Create the benchmark venv with "
            f"`bash bench/setup_bench_env.sh` and run with .venv-bench/bin/python."
        )
    return None


def as_user_model(module: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``module`` as a Lucent user holds it: eval mode, parameters trainable.

    The product's model handles come frozen (``requires_grad=False``); a model a user
    loads from torchvision or a checkpoint does not, and ``render_vis`` does not change
    that, so its backward pass also computes weight gradients. The copy is in the default
    (contiguous) memory format even if the engine already made the original channels_last.
    """
    user = copy.deepcopy(module).to(memory_format=torch.contiguous_format)
    for p in user.parameters():
        p.requires_grad_(True)
    return user.eval()


def final_linear_layer(module: torch.nn.Module) -> str:
    """Lucent's hook name (``_``-joined path) of the last ``nn.Linear``: the logits layer."""
    names = [name for name, m in module.named_modules() if isinstance(m, torch.nn.Linear)]
    if not names:
        raise ValueError("Lucent objective needs an nn.Linear logits layer; the model has none")
    return names[-1].replace(".", "_")


def render_class(
    model: torch.nn.Module,
    class_index: int,
    *,
    size: int,
    steps: int,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    seed: int,
    layer: str | None = None,
) -> torch.Tensor:
    """One Lucent visualisation of ``class_index``'s logit; returns (3, H, W) in [0, 1] on CPU.

    ``model`` takes normalised input. For ImageNet statistics Lucent's own
    ``preprocess=True`` normalisation is used; for other statistics a user appends
    their normalisation to the standard transforms instead, as done here.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # kornia 0.4.1 on recent torch: jit deprecation notes
        from lucent.optvis import objectives, param, render, transform

        torch.manual_seed(seed)
        np.random.seed(seed % 2**32)
        objective = objectives.channel(layer or final_linear_layer(model), class_index)
        imagenet = _close(mean, IMAGENET_MEAN) and _close(std, IMAGENET_STD)
        transforms = None if imagenet else [*transform.standard_transforms, _normaliser(mean, std)]
        images = render.render_vis(
            model,
            objective,
            param_f=lambda: param.image(size),
            transforms=transforms,
            preprocess=imagenet,
            thresholds=(steps,),
            show_image=False,
            progress=False,
            # Lucent upsamples anything under 224 px to 224; a user of a smaller model
            # keeps the model's own size, as here. At 224 and above: Lucent's default.
            fixed_image_size=size if size < 224 else None,
        )
    return torch.from_numpy(images[-1][0]).permute(2, 0, 1).contiguous().float()


def _close(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    return len(a) == len(b) and all(abs(x - y) < 1e-6 for x, y in zip(a, b, strict=True))


def _normaliser(mean: tuple[float, ...], std: tuple[float, ...]):
    def normalise(x: torch.Tensor) -> torch.Tensor:
        m = torch.tensor(mean, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
        s = torch.tensor(std, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
        return (x - m) / s

    return normalise
