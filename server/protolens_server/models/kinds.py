"""What kind of model a path holds: by scheme, then suffix, then contents.

One table for every place that has to tell (``registry.load_path``, the store's
listing in ``catalog``, MLflow artifacts in ``mlflow``), and no loader imported:
listing a store needs none of torch's deserialisers, transformers or timm.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from protolens_server.models._files import sniff
from protolens_server.models.pretrained import folder_kind, is_model_folder

Kind = Literal["torchscript", "exported", "mar", "state_dict", "transformers", "timm", "unknown"]

TORCHSCRIPT_SUFFIXES = (".pt", ".ts", ".jit", ".torchscript")
EXPORT_SUFFIXES = (".pt2",)
MAR_SUFFIXES = (".mar",)
STATE_DICT_SUFFIXES = (".pth", ".bin", ".ckpt")
MODEL_SUFFIXES = TORCHSCRIPT_SUFFIXES + EXPORT_SUFFIXES + MAR_SUFFIXES + STATE_DICT_SUFFIXES

# reference schemes (``export:PATH``) -> the kind they force
SCHEME_KINDS: dict[str, Kind] = {
    "torchscript": "torchscript",
    "export": "exported",
    "mar": "mar",
    "hf": "transformers",
    "timm": "timm",
}


def suffix_kind(path: Path) -> Kind:
    suffix = path.suffix.lower()
    if suffix in TORCHSCRIPT_SUFFIXES:
        return "torchscript"
    if suffix in EXPORT_SUFFIXES:
        return "exported"
    if suffix in MAR_SUFFIXES:
        return "mar"
    if suffix in STATE_DICT_SUFFIXES:
        return "state_dict"
    return "unknown"


def kind_of(path: Path) -> Kind:
    """A model folder by its ``config.json``; a file by its suffix, else by its zip layout."""
    if path.is_dir():
        return folder_kind(path) if is_model_folder(path) else "unknown"
    kind = suffix_kind(path)
    if kind != "unknown":
        return kind
    sniffed = sniff(path)
    return sniffed if sniffed in ("torchscript", "exported", "mar") else "unknown"


def is_model(path: Path) -> bool:
    """A model file by its suffix, or a model folder (what a store or artifact listing
    counts as a model, without opening anything but ``config.json``'s folder)."""
    try:
        if path.is_file():
            return path.suffix.lower() in MODEL_SUFFIXES
        return is_model_folder(path)
    except OSError:
        return False
