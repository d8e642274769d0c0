"""Hugging Face ``transformers`` image classifiers from a local ``save_pretrained`` folder.

The folder holds ``config.json`` (architecture, ``id2label``), ``*.safetensors``
weights and usually ``preprocessor_config.json`` (size, mean, std). Loading is
``AutoModelForImageClassification.from_pretrained(folder, local_files_only=True,
trust_remote_code=False, use_safetensors=True)``: nothing is downloaded, no code
from the folder runs (a config with ``auto_map``, i.e. custom modelling code, is
refused), and pickled ``pytorch_model.bin`` weights are refused. Every weight
must be in the file (missing, unexpected or mis-shaped weights are an error, not
a random initialisation).

What the engine needs comes from the model's own files:

- input spec: channels from ``num_channels``; size from the preprocessor's
  ``crop_size`` (when it centre-crops) or ``size`` (``height``/``width``,
  ``shortest_edge``), else ``image_size``; mean/std from ``image_mean``/``image_std``
  rescaled to [0,1] image units (``rescale_factor``), 0/1 when it does not
  normalise; a key the preprocessor config leaves out has its processor class's
  default (``image_processor_type``), as transformers fills it; the ImageNet default
  when there is no preprocessor config;
- class names from ``id2label`` (transformers' placeholder ``LABEL_<i>`` names
  count as none);
- a multi-label model from ``problem_type: multi_label_classification`` (its logits
  are one per label, ``sidecar.MULTI_LABEL_LOGITS``).

The forward returns an ``ImageClassifierOutput``; the handle's module is wrapped
to return its ``logits`` (``_logits.LogitsOnly``). Needs the ``hf`` extra:
``pip install 'protolens[hf]'``.
"""

from __future__ import annotations

import re
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
from protolens_server.models.pretrained import (
    PREPROCESSOR,
    existing_folder,
    read_config,
    safetensors_files,
)
from protolens_server.models.sidecar import MULTI_LABEL_LOGITS, ClassNames, Sidecar, find_sidecar

_PLACEHOLDER_LABEL = re.compile(r"LABEL_\d+")
# config.json keys that do not change what the model computes (left out of the digest;
# class names are not in any model's digest)
_VOLATILE_KEYS = frozenset(
    ("transformers_version", "_name_or_path", "dtype", "torch_dtype", "id2label", "label2id")
)


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
    if "auto_map" in config:
        raise InvalidModel(
            f"{folder}: config.json names custom modelling code (auto_map); protolens never "
            "runs code from a model folder: use an architecture transformers ships"
        )
    safetensors_files(folder)  # refuses a folder with pickled weights only
    model = _from_pretrained(folder)
    own = Sidecar(
        input_spec=spec_of(folder, config),
        classes=labels_of(config),
        origin="",
        output=output_of(config),
    )
    meta = merge_metadata(spec, class_names, find_sidecar(folder), own, output=output)
    architecture = "transformers:" + _canonical_config(config)
    return build_handle(
        name=name or folder.name,
        source=f"hf:{folder}",
        module=model,
        fmt="eager",
        weights_sha256=state_dict_sha256(model.state_dict(), architecture),
        spec=meta.input_spec or InputSpec(),
        classes=meta.classes,
        device=device,
        description=meta.description,
        output=meta.output,
        metadata={
            "library": "transformers",
            "architecture": ",".join(config.get("architectures") or [str(config["model_type"])]),
            "input_spec": "given"
            if spec or (folder / PREPROCESSOR).is_file()
            else "config.json image_size, default mean/std",
        },
        classes_origin=meta.origin or f"{folder}/config.json id2label",
    )


def output_of(config: dict[str, Any]) -> str:
    """``multi-label-logits`` for a model transformers trained as multi-label
    (``problem_type``: one binary cross-entropy per label), else undeclared."""
    if config.get("problem_type") == "multi_label_classification":
        return MULTI_LABEL_LOGITS
    return ""


def _from_pretrained(folder: Path) -> torch.nn.Module:
    try:
        import transformers
        from transformers import AutoModelForImageClassification
    except ModuleNotFoundError as exc:
        raise InvalidModel(
            f"{folder}: a Hugging Face model needs transformers: pip install 'protolens[hf]'"
        ) from exc
    transformers.utils.logging.disable_progress_bar()
    try:
        model, info = AutoModelForImageClassification.from_pretrained(
            str(folder),
            local_files_only=True,
            trust_remote_code=False,
            use_safetensors=True,
            dtype=torch.float32,
            output_loading_info=True,
        )
    except RuntimeError as exc:  # weights of other shapes than the config's architecture
        raise InvalidModel(
            f"{folder}: the weights do not fit the config's architecture: {_first_line(exc)}; "
            "save the model and its config together with save_pretrained"
        ) from exc
    except (ValueError, KeyError, OSError) as exc:
        raise InvalidModel(
            f"{folder}: transformers cannot load it as an image classifier "
            f"(AutoModelForImageClassification): {_first_line(exc)}"
        ) from exc
    problems = {k: sorted(v)[:5] for k, v in info.items() if k.endswith("keys") and v}
    if problems:
        raise InvalidModel(
            f"{folder}: the weights do not fit the config's architecture: {problems}; "
            "save the model and its config together with save_pretrained"
        )
    return model


def spec_of(folder: Path, config: dict[str, Any]) -> InputSpec | None:
    """The input spec the model's preprocessor implies (None without a preprocessor config
    and without ``image_size``)."""
    channels = int(config.get("num_channels", 3))
    pre = folder / PREPROCESSOR
    if not pre.is_file():
        size = config.get("image_size")
        if size is None:
            return None
        h, w = _pair(size, folder / "config.json", "image_size")
        default = InputSpec()
        if channels != default.channels:
            return InputSpec(channels, h, w, mean=(0.5,) * channels, std=(0.5,) * channels)
        return InputSpec(channels, h, w, mean=default.mean, std=default.std)
    p = with_class_defaults(read_config(folder, PREPROCESSOR))
    h, w = _size_of(p, config, pre)
    # pixel values are bytes 0..255 times rescale_factor (1/255: [0,1]) before normalising
    scale = 255.0 * float(p.get("rescale_factor", 1 / 255)) if p.get("do_rescale", True) else 255.0
    if p.get("do_normalize", True) and "image_mean" in p and "image_std" in p:
        mean = _per_channel(p["image_mean"], channels, pre, "image_mean")
        std = _per_channel(p["image_std"], channels, pre, "image_std")
    else:
        mean, std = (0.0,) * channels, (1.0,) * channels
    return InputSpec(
        channels,
        h,
        w,
        mean=tuple(m / scale for m in mean),
        std=tuple(s / scale for s in std),
    )


# What the input spec reads from a preprocessor config; a key the file leaves out has the
# processor class's default, as transformers itself fills it in when it loads the file.
_PROCESSOR_KEYS = (
    "size",
    "crop_size",
    "do_center_crop",
    "do_rescale",
    "rescale_factor",
    "do_normalize",
    "image_mean",
    "image_std",
)


def with_class_defaults(p: dict[str, Any]) -> dict[str, Any]:
    """``p`` with the keys it leaves out taken from its ``image_processor_type``'s class
    defaults (one of transformers' own image processor classes; anything else, or a
    transformers without class-level defaults, leaves ``p`` as it is)."""
    name = p.get("image_processor_type")
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9]+ImageProcessor(Fast)?", name):
        return p
    try:
        import transformers

        verbosity = transformers.utils.logging.get_verbosity()
        transformers.utils.logging.set_verbosity_error()  # the torchvision fallback notice
        try:
            cls = getattr(transformers, name, None)
        finally:
            transformers.utils.logging.set_verbosity(verbosity)
    except (ImportError, AttributeError, RuntimeError):
        return p
    defaults = {k: getattr(cls, k) for k in _PROCESSOR_KEYS if getattr(cls, k, None) is not None}
    return {**defaults, **p}


def labels_of(config: dict[str, Any]) -> ClassNames | None:
    """Class names from ``id2label`` (None for transformers' ``LABEL_<i>`` placeholders)."""
    raw = config.get("id2label")
    if not isinstance(raw, dict) or not raw:
        return None
    try:
        by_index = {int(k): str(v) for k, v in raw.items()}
    except (TypeError, ValueError):
        return None
    if sorted(by_index) != list(range(len(by_index))):
        return None
    names = tuple(by_index[i] for i in range(len(by_index)))
    if all(_PLACEHOLDER_LABEL.fullmatch(n) for n in names):
        return None
    return ClassNames(names, ((),) * len(names))


def _size_of(p: dict[str, Any], config: dict[str, Any], origin: Path) -> tuple[int, int]:
    if p.get("do_center_crop") and p.get("crop_size") is not None:
        return _pair(p["crop_size"], origin, "crop_size")
    size = p.get("size")
    if isinstance(size, dict) and "shortest_edge" in size and "height" not in size:
        edge = int(size["shortest_edge"])  # a square model input of that edge
        return edge, edge
    if size is not None:
        return _pair(size, origin, "size")
    if config.get("image_size") is not None:
        return _pair(config["image_size"], origin, "image_size")
    raise InvalidModel(f"{origin}: no input size (size, crop_size or config image_size)")


def _pair(value: Any, origin: Path, key: str) -> tuple[int, int]:
    if isinstance(value, dict) and "height" in value and "width" in value:
        return int(value["height"]), int(value["width"])
    if isinstance(value, int):
        return value, value
    if isinstance(value, list | tuple) and len(value) == 2:
        return int(value[0]), int(value[1])
    raise InvalidModel(f"{origin}: {key} {value!r} is not a size (an int, [h, w], or height/width)")


def _per_channel(value: Any, channels: int, origin: Path, key: str) -> tuple[float, ...]:
    if isinstance(value, int | float):
        value = [value] * channels
    values = [float(v) for v in value]
    if len(values) != channels:
        raise InvalidModel(f"{origin}: {key} has {len(values)} values for {channels} channels")
    return tuple(values)


def _canonical_config(config: dict[str, Any]) -> str:
    import json

    kept = {k: v for k, v in config.items() if k not in _VOLATILE_KEYS}
    return json.dumps(kept, sort_keys=True, separators=(",", ":"))
