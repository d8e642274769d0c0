"""Unit objectives: make a layer's channel, neuron or direction fire (Lucent's objectives).

A unit target (``Target(kind="unit")``) is a weighted sum of ``UnitTerm``s; its
loss per image is ``-sum(weight * value)``. Values are read from the layers'
outputs by forward hooks that ``UnitProbe`` holds on the (unfolded) eager model
for one ``generate`` call. ``check_units`` validates a target against the
model's layers before anything runs, naming the layer or unit at fault and what
exists; ``layer_shapes`` is what ``protolens layers`` lists.

The loss divides each layer's values by that layer's typical spread (the standard
deviation of its output over ``SCALE_IMAGES`` seeded uniform-noise images), so
terms from different layers weigh alike in a sum and a unit objective stands
against the image priors (high-frequency penalty, BatchNorm prior) as a class
logit does; the value reported on a prototype is the raw weighted sum.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Sequence
from typing import Any

import torch

from protolens_server.errors import InvalidArgument

from . import _objectives as obj
from ._activations import LOGITS, model_layers
from ._memo import memo_of
from .types import Target, UnitTerm

SHOWN_LAYERS = 40  # an unknown layer's message lists at most this many
SCALE_IMAGES = 8  # noise images that measure a layer's spread
SCALE_SEED = 0


def scale_images(shape: Sequence[int]) -> torch.Tensor:
    """The ``SCALE_IMAGES`` seeded uniform-noise images (CPU) that measure a spread: a
    layer's here, the logits' in ``_logit_scale``."""
    g = torch.Generator().manual_seed(SCALE_SEED)
    return torch.rand((SCALE_IMAGES, *shape), generator=g)


def layer_shapes(
    model: Any, *, device: str | torch.device = "cpu"
) -> list[tuple[str, tuple[int, ...]]]:
    """Every layer a unit target (or a score) may name, in call order, with its output shape
    for one image (batch dimension dropped), ending with ``logits``.

    Needs an eager ``nn.Module`` for inner layers; an exported program or TorchScript
    lists ``logits`` alone.
    """
    found = model_layers(model, device=device)
    shapes = []
    for name in found.available():
        if name == LOGITS:
            shapes.append((LOGITS, (int(model.num_classes),)))
        else:
            shape = found.infos[name].shape or ()
            shapes.append((name, tuple(int(v) for v in shape[1:])))
    return shapes


def has_units(targets: Sequence[Target]) -> bool:
    return any(t.kind == "unit" for t in targets)


def check_units(model: Any, targets: Sequence[Target], *, field: str = "targets") -> None:
    """Each unit target's layers exist, and its channels, positions and directions fit them.

    Raises ``InvalidArgument`` naming ``{field}[i]``, the layer or unit, and what exists.
    """
    if not has_units(targets):
        return
    found = model_layers(model)
    if found.mode != "hooks" and any(u.layer != LOGITS for t in targets for u in t.units):
        raise InvalidArgument(
            field,
            "unit objectives on inner layers need an eager PyTorch model (a state_dict with its"
            f" factory, or a pickled module); this model's layers are reached by {found.mode!r}:"
            f" only '{LOGITS}' can be named",
        )
    check_unit_shapes(targets, dict(layer_shapes(model)), field=field)


def check_unit_shapes(
    targets: Sequence[Target], shapes: dict[str, tuple[int, ...]], *, field: str = "targets"
) -> None:
    """``check_units`` against known layer shapes (``layer_shapes``), without the model."""
    for i, target in enumerate(targets):
        for j, term in enumerate(target.units):
            _check_term(term, shapes, f"{field}[{i}].units[{j}]")


def _check_term(term: UnitTerm, shapes: dict[str, tuple[int, ...]], field: str) -> None:
    if term.layer not in shapes:
        names = list(shapes)
        shown = ", ".join(names[:SHOWN_LAYERS]) + (
            f", ... ({len(names) - SHOWN_LAYERS} more)" if len(names) > SHOWN_LAYERS else ""
        )
        raise InvalidArgument(
            field, f"unknown layer {term.layer!r}; this model's layers are: {shown}"
        )
    shape = shapes[term.layer]
    channels = _channels(shape)
    where = f"layer {term.layer!r} (output {_shape_text(shape)})"
    if term.unit == "direction":
        if len(term.direction) != channels:
            raise InvalidArgument(
                field,
                f"a direction of {len(term.direction)} values; {where} has {channels} channels",
            )
        return
    if term.index >= channels:
        raise InvalidArgument(
            field,
            f"{term.unit} {term.index} does not exist: {where} has channels 0..{channels - 1}",
        )
    if term.unit == "neuron" and term.position:
        grid = _grid(shape)
        if len(term.position) != len(grid) or any(
            p >= g for p, g in zip(term.position, grid, strict=False)
        ):
            raise InvalidArgument(
                field,
                f"position {term.position} is outside {where}: positions are"
                f" {tuple(g - 1 for g in grid) or 'none'} at most (0-based)",
            )


def _channels(shape: tuple[int, ...]) -> int:
    """Channels of a per-image output: C of (C, H, W), D of (T, D), D of (D,)."""
    if len(shape) == 3:
        return shape[0]
    return shape[-1] if shape else 0


def _grid(shape: tuple[int, ...]) -> tuple[int, ...]:
    if len(shape) == 3:
        return shape[1:]
    if len(shape) == 2:
        return shape[:1]
    return ()


def _shape_text(shape: tuple[int, ...]) -> str:
    return "x".join(str(v) for v in shape) or "scalar"


def term_value(
    activation: torch.Tensor, term: UnitTerm, grid: tuple[int, ...] = ()
) -> torch.Tensor:
    """The term's value per image, shape (N,), from the layer's output for the batch.

    ``grid`` is the layer's spatial size for an untransformed input: a neuron's
    position is scaled to the activation's actual size (transforms may crop or
    rescale the input, and with it every layer's grid).
    """
    a = activation.float()
    if term.unit == "direction":
        d = torch.tensor(term.direction, dtype=a.dtype, device=a.device)
        d = d / d.norm()
        return _mean_over_positions(a) @ d
    if term.unit == "channel":
        return _mean_over_positions(a)[:, term.index]
    # neuron
    if a.dim() == 4:
        h, w = a.shape[2:]
        y, x = _scaled(term.position, grid, (h, w))
        return a[:, term.index, y, x]
    if a.dim() == 3:
        t = a.shape[1]
        (k,) = _scaled(term.position, grid, (t,))
        return a[:, k, term.index]
    return a[:, term.index]


def _mean_over_positions(a: torch.Tensor) -> torch.Tensor:
    if a.dim() == 4:
        return a.mean(dim=(2, 3))
    if a.dim() == 3:
        return a.mean(dim=1)
    return a.reshape(a.shape[0], -1)


def _scaled(
    position: tuple[int, ...], grid: tuple[int, ...], actual: tuple[int, ...]
) -> tuple[int, ...]:
    """``position`` (default: the centre) in a grid of size ``grid``, mapped onto ``actual``."""
    if not position:
        return tuple(n // 2 for n in actual)
    grid = grid or actual
    return tuple(
        min(n - 1, int(p * n / max(g, 1))) for p, g, n in zip(position, grid, actual, strict=True)
    )


class UnitProbe:
    """Forward hooks on the layers the unit targets of one call name (calling thread only).

    Entered around a ``generate`` call; ``objective(targets)`` is the unit loss of
    a chunk (zero for class targets), ``values(targets, logits)`` each target's
    value after the last forward.
    """

    def __init__(self, module: Any, targets: Sequence[Target], model: Any | None = None) -> None:
        self.layers = sorted({u.layer for t in targets for u in t.units if u.layer != LOGITS})
        self.outputs: dict[str, torch.Tensor] = {}
        self._module = module
        self._targets = tuple(targets)
        self._names = sorted({u.layer for t in targets for u in t.units})
        self._thread = threading.get_ident()
        self._handles: list[Any] = []
        self._grids: dict[str, tuple[int, ...]] = {}
        self._model = model
        self.scales: dict[str, float] = {}
        if model is not None and self.layers:
            shapes = dict(layer_shapes(model))
            self._grids = {n: _grid(shapes.get(n, ())) for n in self.layers}

    def __enter__(self) -> UnitProbe:
        if self._model is not None and has_units_in(self._targets):
            self.scales = layer_scales(self._module, self._model.input_spec, self._names)
        for name in self.layers:
            sub = self._module.get_submodule(name)
            self._handles.append(sub.register_forward_hook(self._hook(name)))
        return self

    def __exit__(self, *exc: object) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self.outputs.clear()

    def _hook(self, name: str) -> Callable[..., None]:
        def hook(_module: Any, _inputs: Any, output: Any) -> None:
            if threading.get_ident() != self._thread:
                return
            if isinstance(output, (tuple, list)):
                output = output[0]
            self.outputs[name] = output

        return hook

    def value(
        self, targets: Sequence[Target], logits: torch.Tensor, *, scaled: bool = False
    ) -> torch.Tensor:
        """(N,) ``sum(weight * value)`` per image of the last forward (0 for class targets);
        ``scaled``: each value divided by its layer's spread (the loss's units)."""
        values = []
        for k, target in enumerate(targets):
            v = logits.new_zeros((), dtype=torch.float32)
            for term in target.units:
                act = logits if term.layer == LOGITS else self.outputs[term.layer]
                grid = self._grids.get(term.layer, ())
                scale = self.scales.get(term.layer, 1.0) if scaled else 1.0
                v = v + term.weight * term_value(act[k : k + 1], term, grid)[0] / scale
            values.append(v)
        return torch.stack(values)

    def objective(self, targets: Sequence[Target]) -> obj.Objective:
        """Minimise ``-value`` (maximise the weighted unit sum) per image."""
        return obj.Objective(lambda c: -self.value(targets, c.logits, scaled=True), "units")


def has_units_in(targets: Sequence[Target]) -> bool:
    return any(t.units for t in targets)


# Layer spreads per module (weakly held), by layer name.
_scales: weakref.WeakKeyDictionary[Any, dict[str, float]] = weakref.WeakKeyDictionary()


@torch.no_grad()
def layer_scales(module: Any, spec: Any, names: Sequence[str]) -> dict[str, float]:
    """Each named layer's output standard deviation over ``SCALE_IMAGES`` seeded noise
    images (``logits``: the logits'); memoised per module."""
    memo = memo_of(_scales, module, dict)
    missing = [n for n in names if n not in memo]
    if missing:
        seen: dict[str, torch.Tensor] = {}
        handles = []
        for name in missing:
            if name == LOGITS:
                continue
            hook = _keep(seen, name)
            handles.append(module.get_submodule(name).register_forward_hook(hook))
        device = next((p.device for p in module.parameters()), torch.device("cpu"))
        x01 = scale_images(spec.shape).to(device)
        try:
            out = module(spec.normalise(x01))
        finally:
            for h in handles:
                h.remove()
        seen[LOGITS] = out[0] if isinstance(out, (tuple, list)) else out
        for name in missing:
            std = float(seen[name].float().std()) if name in seen else 1.0
            memo[name] = std if std > 1e-6 else 1.0
    return {n: memo[n] for n in names}


def _keep(seen: dict[str, torch.Tensor], name: str) -> Callable[..., None]:
    def hook(_module: Any, _inputs: Any, output: Any) -> None:
        seen[name] = output[0] if isinstance(output, (tuple, list)) else output

    return hook
