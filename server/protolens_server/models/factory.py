"""Eager models: an importable architecture factory plus a state dict.

Reference syntax: ``factory:package.module:function@/path/to/weights.pth``
(``@weights`` optional: without it the factory's own weights are used). The
factory is called with no arguments and must return an ``nn.Module``; the
state dict is read with ``torch.load(weights_only=True)`` (tensors only, no
pickled code) and loaded strictly. Importing the factory runs that package's
code, so the service accepts factories only from the admin's model store.
"""

from __future__ import annotations

import importlib
import io
import pickle
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from protolens_server.engine.types import InputSpec
from protolens_server.errors import InvalidArgument, InvalidModel, ModelNotFound
from protolens_server.models._build import _first_line, build_handle
from protolens_server.models._digest import state_dict_sha256
from protolens_server.models._files import existing_file, merge_metadata
from protolens_server.models.handle import ModelHandle
from protolens_server.models.sidecar import Sidecar, find_sidecar

_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model")


def parse_ref(ref: str) -> tuple[str, str | None]:
    """``"pkg.mod:fn@/w.pth"`` (with or without ``factory:``) -> (``"pkg.mod:fn"``, path)."""
    body = ref.removeprefix("factory:")
    target, sep, weights = body.partition("@")
    module_name, colon, attr = target.partition(":")
    if not colon or not module_name or not attr or (sep and not weights):
        raise InvalidArgument(
            "model", f"{ref!r}: expected factory:package.module:function[@/path/weights.pth]"
        )
    return target, (weights or None)


def load(
    ref: str,
    weights: str | Path | None = None,
    *,
    spec: InputSpec | None = None,
    class_names: Sequence[str] | None = None,
    device: str = "cpu",
    name: str | None = None,
    output: str | None = None,
) -> ModelHandle:
    """Load ``ref`` (``package.module:function``, optionally ``@weights``) as an eager model."""
    target, ref_weights = parse_ref(ref)
    weights = weights or ref_weights
    sidecar = Sidecar()
    state = None
    if weights is not None:
        p = existing_file(weights)
        sidecar = find_sidecar(p)
        state = read_state_dict(p, str(p))
    meta = merge_metadata(spec, class_names, sidecar, output=output)
    default_name = Path(weights).stem if weights else target.rpartition(":")[2]
    source = f"factory:{target}" + (f"@{weights}" if weights else "")
    return handle_for(target, state, name or default_name, source, meta, device)


def handle_for(
    target: str,
    state: Mapping[str, torch.Tensor] | None,
    name: str,
    source: str,
    meta: Sidecar,
    device: str,
    metadata: dict[str, str] | None = None,
) -> ModelHandle:
    module = build_module(target)
    if state is not None:
        try:
            module.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise InvalidModel(
                f"{source}: the weights do not fit {target}(): {_first_line(exc)}"
            ) from exc
    return build_handle(
        name=name,
        source=source,
        module=module,
        fmt="eager",
        weights_sha256=state_dict_sha256(module.state_dict(), target),
        spec=meta.input_spec or InputSpec(),
        classes=meta.classes,
        device=device,
        description=meta.description,
        output=meta.output,
        metadata={
            "factory": target,
            "input_spec": "given" if meta.input_spec else "default (ImageNet 3x224x224)",
            **(metadata or {}),
        },
        classes_origin=meta.origin or "class names",
    )


def import_factory(target: str) -> Any:
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ModelNotFound(f"factory {target}: cannot import {module_name!r}: {exc}") from exc
    except Exception as exc:
        raise InvalidModel(
            f"factory {target}: importing {module_name!r} failed: {_first_line(exc)}"
        ) from exc
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ModelNotFound(f"factory {target}: {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise InvalidModel(f"factory {target}: {attr!r} is not callable")
    return obj


def build_module(target: str) -> torch.nn.Module:
    fn = import_factory(target)
    try:
        module = fn()
    except Exception as exc:
        raise InvalidModel(f"factory {target}: calling it failed: {_first_line(exc)}") from exc
    if not isinstance(module, torch.nn.Module):
        raise InvalidModel(
            f"factory {target}: returned {type(module).__name__}, expected a torch.nn.Module"
        )
    return module


def read_state_dict(source: Path | bytes, origin: str) -> dict[str, torch.Tensor]:
    """A tensors-only state dict (also unwraps ``{"state_dict": {...}}`` checkpoints)."""
    try:
        f = io.BytesIO(source) if isinstance(source, bytes) else source
        data = torch.load(f, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise InvalidModel(
            f"{origin}: not a plain state dict (weights_only loading refused it: "
            f"{_first_line(exc)}); save model.state_dict() instead"
        ) from exc
    except Exception as exc:
        raise InvalidModel(f"{origin}: not a torch state dict file ({_first_line(exc)})") from exc
    if isinstance(data, Mapping):
        for key in _WRAPPER_KEYS:
            inner = data.get(key)
            if isinstance(inner, Mapping) and not isinstance(data.get(key), torch.Tensor):
                data = inner
                break
    if not isinstance(data, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in data.items()
    ):
        raise InvalidModel(f"{origin}: not a state dict (expected a mapping of names to tensors)")
    return dict(data)
