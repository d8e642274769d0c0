"""Model folders as Hugging Face ``save_pretrained`` (and timm's hub format) write them.

A folder holding ``config.json`` plus weights (``*.safetensors``, or a
``pytorch_model.bin`` the loaders refuse with advice) is one model:

- a ``transformers`` image classifier when ``config.json`` has ``model_type`` or
  ``architectures`` (``models/hf.py``);
- a timm model when it has ``architecture`` (``models/timm_models.py``).

This module only reads JSON and lists files: it imports neither library, so the
API can list a store of such folders without them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from protolens_server.errors import InvalidModel

FolderKind = Literal["transformers", "timm", "unknown"]
CONFIG = "config.json"
PREPROCESSOR = "preprocessor_config.json"
_WEIGHT_SUFFIXES = (".safetensors", ".bin")
_META_FILES = (CONFIG, PREPROCESSOR, "model.safetensors.index.json")


def is_model_folder(path: Path) -> bool:
    """A folder with ``config.json`` and at least one weights file."""
    try:
        return (
            path.is_dir()
            and (path / CONFIG).is_file()
            and any(f.suffix in _WEIGHT_SUFFIXES for f in path.iterdir() if f.is_file())
        )
    except OSError:
        return False


def folder_files(folder: Path) -> list[Path]:
    """The files that make up the model (config, preprocessor config, weights), sorted:
    what its content digest and change detection cover."""
    try:
        return sorted(
            f
            for f in folder.iterdir()
            if f.is_file() and (f.name in _META_FILES or f.suffix in _WEIGHT_SUFFIXES)
        )
    except OSError:
        return []


def read_config(folder: Path, name: str = CONFIG) -> dict:
    path = folder / name
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidModel(f"{path}: cannot read it as JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise InvalidModel(f"{path}: expected a JSON object")
    return data


def folder_kind(folder: Path) -> FolderKind:
    """Which library wrote the folder, from its ``config.json``."""
    config = read_config(folder)
    if isinstance(config.get("architecture"), str):
        return "timm"
    if "model_type" in config or "architectures" in config:
        return "transformers"
    return "unknown"


def safetensors_files(folder: Path) -> list[Path]:
    """The folder's ``*.safetensors`` weights; a folder with only pickled ``.bin`` weights
    is refused (unpickling runs code), with the way to re-save it."""
    found = sorted(folder.glob("*.safetensors"))
    if found:
        return found
    pickled = sorted(f.name for f in folder.glob("*.bin"))
    raise InvalidModel(
        f"{folder}: no .safetensors weights"
        + (f" ({', '.join(pickled)} is a pickle, which protolens does not load)" if pickled else "")
        + "; re-save the model with save_pretrained(..., safe_serialization=True) "
        "(the default) or safetensors.torch.save_file"
    )


def existing_folder(path: str | Path) -> Path:
    p = Path(path).expanduser()
    if not is_model_folder(p):
        from protolens_server.errors import ModelNotFound

        raise ModelNotFound(
            f"{p}: not a model folder (config.json and *.safetensors weights)", model=str(p)
        )
    return p
