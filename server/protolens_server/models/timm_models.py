"""timm models from a local folder in timm's Hugging Face hub format.

The folder holds ``config.json`` and ``model.safetensors``, as
``timm.models.push_to_hf_hub``/``save_for_hf`` write them::

    {"architecture": "vit_tiny_patch16_224", "num_classes": 10, "num_features": 192,
     "model_args": {...},                         # optional create_model keyword arguments
     "pretrained_cfg": {"input_size": [3, 224, 224], "mean": [...], "std": [...], ...},
     "label_names": ["tench", ...], "label_descriptions": {"tench": "tench, Tinca tinca"}}

The model is ``timm.create_model(architecture, pretrained=False, num_classes=...,
**model_args)`` (no download) with the safetensors weights loaded strictly.
Input spec from ``pretrained_cfg`` (``input_size`` is what the model is fed after
timm's resize and crop; ``mean``/``std`` are in [0,1] image units already), class
names from ``label_names`` (``label_descriptions`` become aliases).

timm imports ``torchvision`` when it is imported; where torchvision is not
installed or does not load (protolens' own machines: the torch 2.13.0 CPU build, and
the only torchvision for it pip reaches is a CUDA build) loading fails with that
reason, and this adapter is untested there (its loading test skips saying so; see
docs/models.md). Needs the ``hf`` extra: ``pip install 'protolens[hf]'``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from protolens_server.engine.types import InputSpec
from protolens_server.errors import InvalidModel
from protolens_server.models._build import _first_line, build_handle
from protolens_server.models._digest import state_dict_sha256
from protolens_server.models._files import merge_metadata
from protolens_server.models.handle import ModelHandle
from protolens_server.models.pretrained import existing_folder, read_config, safetensors_files
from protolens_server.models.sidecar import ClassNames, Sidecar, find_sidecar


def load(
    path: str | Path,
    *,
    spec: InputSpec | None = None,
    class_names: Sequence[str] | None = None,
    device: str = "cpu",
    name: str | None = None,
    output: str | None = None,
) -> ModelHandle:
    folder = existing_folder(path)
    config = read_config(folder)
    weights = safetensors_files(folder)
    model = _create(folder, config)
    state = _read_safetensors(weights)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise InvalidModel(
            f"{folder}: the weights do not fit {config['architecture']}: {_first_line(exc)}"
        ) from exc
    own = Sidecar(input_spec=spec_of(config), classes=labels_of(config))
    meta = merge_metadata(spec, class_names, find_sidecar(folder), own, output=output)
    architecture = f"timm:{config['architecture']}:{sorted(_create_kwargs(config).items())}"
    return build_handle(
        name=name or folder.name,
        source=f"timm:{folder}",
        module=model,
        fmt="eager",
        weights_sha256=state_dict_sha256(model.state_dict(), architecture),
        spec=meta.input_spec or InputSpec(),
        classes=meta.classes,
        device=device,
        description=meta.description,
        output=meta.output,
        metadata={"library": "timm", "architecture": str(config["architecture"])},
        classes_origin=meta.origin or f"{folder}/config.json label_names",
    )


def spec_of(config: dict[str, Any]) -> InputSpec | None:
    """The input spec from ``pretrained_cfg`` (None when it gives no ``input_size``)."""
    pre = config.get("pretrained_cfg") or {}
    size = pre.get("test_input_size") or pre.get("input_size")
    if not size or len(size) != 3:
        return None
    c, h, w = (int(v) for v in size)
    default = InputSpec()
    mean = tuple(float(v) for v in pre.get("mean", default.mean))
    std = tuple(float(v) for v in pre.get("std", default.std))
    if len(mean) != c or len(std) != c:
        raise InvalidModel(
            f"timm config: mean/std have {len(mean)}/{len(std)} values for {c} channels"
        )
    return InputSpec(c, h, w, mean=mean, std=std)


def labels_of(config: dict[str, Any]) -> ClassNames | None:
    names = config.get("label_names")
    if not isinstance(names, list) or not names:
        return None
    described = config.get("label_descriptions") or {}
    aliases = tuple(
        (str(described[n]),) if isinstance(described.get(n), str) and described[n] != n else ()
        for n in names
    )
    return ClassNames(tuple(str(n) for n in names), aliases)


def _create_kwargs(config: dict[str, Any]) -> dict[str, Any]:
    kwargs = dict(config.get("model_args") or {})
    if "num_classes" in config:
        kwargs.setdefault("num_classes", int(config["num_classes"]))
    if config.get("global_pool") is not None:
        kwargs.setdefault("global_pool", config["global_pool"])
    spec = spec_of(config)
    if spec is not None:
        kwargs.setdefault("in_chans", spec.channels)
    return kwargs


def _create(folder: Path, config: dict[str, Any]) -> torch.nn.Module:
    try:
        import timm
    except (ImportError, RuntimeError) as exc:  # a torchvision built for another torch:
        # its extension fails to register (RuntimeError: operator torchvision::nms ...)
        raise InvalidModel(
            f"{folder}: a timm model needs timm and torchvision (built for this torch; timm "
            f"imports it): pip install 'protolens[hf]' ({_first_line(exc)})"
        ) from exc
    try:
        return timm.create_model(
            str(config["architecture"]), pretrained=False, **_create_kwargs(config)
        )
    except (RuntimeError, ValueError, TypeError, KeyError) as exc:
        raise InvalidModel(
            f"{folder}: timm cannot build {config['architecture']!r}: {_first_line(exc)}"
        ) from exc


def _read_safetensors(files: list[Path]) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    state: dict[str, torch.Tensor] = {}
    for f in files:
        try:
            state.update(load_file(str(f)))
        except Exception as exc:
            raise InvalidModel(f"{f}: not a safetensors file ({_first_line(exc)})") from exc
    return state
