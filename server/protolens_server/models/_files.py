"""Shared file checks for loaders: existence, sniffing what a file really is, metadata merge."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from protolens_server.engine.types import InputSpec
from protolens_server.errors import ModelNotFound
from protolens_server.models.sidecar import ClassNames, Sidecar, parse_class_names, parse_output

FileKind = Literal["torchscript", "exported", "mar", "checkpoint", "unknown"]

_HINTS: dict[str, str] = {
    "torchscript": "it is a TorchScript file: use a .pt/.ts name or the torchscript: scheme",
    "exported": "it is a torch.export program: use a .pt2 name or the export: scheme",
    "mar": "it is a TorchServe archive: use a .mar name or the mar: scheme",
    "checkpoint": (
        "it is a torch.save() checkpoint (a state dict?): load it with its architecture as "
        "factory:package.module:function@PATH"
    ),
}


def existing_file(path: str | Path) -> Path:
    p = Path(path).expanduser()
    if not p.is_file():
        what = "is a directory, not a model file" if p.is_dir() else "no such model file"
        raise ModelNotFound(f"{p}: {what}", model=str(p))
    return p


def sniff(source: Path | bytes) -> FileKind:
    """What a model file is, from its zip layout (all torch formats are zips)."""
    try:
        with zipfile.ZipFile(io.BytesIO(source) if isinstance(source, bytes) else source) as zf:
            names = zf.namelist()
    except (zipfile.BadZipFile, OSError):
        return "unknown"
    return sniff_names(names)


def sniff_names(names: Sequence[str]) -> FileKind:
    if "MAR-INF/MANIFEST.json" in names:
        return "mar"
    if any(n.endswith("/archive_format") or n.endswith("/models/model.json") for n in names):
        return "exported"
    if any("/code/__torch__/" in n for n in names) and any(
        n.endswith("/constants.pkl") for n in names
    ):
        return "torchscript"
    if any(n.endswith("/data.pkl") for n in names):
        return "checkpoint"
    return "unknown"


def not_a_model_hint(kind: FileKind, source: Path | bytes | None = None) -> str:
    """`` (what the file is and how to load it)``, or ``""``. For a ``torch.save()`` file
    with ``source`` given, whether it holds only tensors (a state dict) or a whole pickled
    module, read from its pickle's opcodes, never unpickled."""
    if kind == "checkpoint" and source is not None:
        classes = _pickled_classes(source)
        if classes == []:
            return (
                " (it is a state dict saved with torch.save(): weights without the code of "
                "the model; load it with its architecture as factory:package.module:function@PATH)"
            )
        if classes:
            return (
                f" (it is a whole module saved with torch.save(model): a pickle that would "
                f"import {', '.join(classes[:2])}, i.e. run code, so it is never loaded; save "
                "it as TorchScript (torch.jit.script(model).save('model.pt')) or torch.export "
                "(.pt2), or save model.state_dict() and load it with its architecture as "
                "factory:package.module:function@PATH)"
            )
    return f" ({_HINTS[kind]})" if kind in _HINTS else ""


def _pickled_classes(source: Path | bytes) -> list[str] | None:
    """The non-tensor globals a ``torch.save()`` file's pickle names, classes of its own
    before builtins (``[]``: a state dict; None: it cannot be read)."""
    from protolens_server.models._pickle_scan import pickle_globals, tensor_global, zip_pickles

    try:
        blobs = zip_pickles(source)
        names = set().union(*(pickle_globals(b) for b in blobs)) if blobs else set()
    except Exception:  # a hint only: a file it cannot read gets the general one
        return None
    if not blobs:
        return None
    odd = [n for n in names if not tensor_global(n)]
    return sorted(odd, key=lambda n: (n.startswith(("__builtin__.", "builtins.")), n))


def merge_metadata(
    spec: InputSpec | None,
    class_names: Sequence[str] | None,
    *sources: Sidecar,
    output: str | None = None,
) -> Sidecar:
    """Explicit arguments win, then each sidecar in order."""
    explicit = Sidecar(
        input_spec=spec,
        classes=parse_class_names(list(class_names), "class_names") if class_names else None,
        origin="arguments" if spec or class_names else "",
        output=parse_output(output) if output else "",
    )
    merged = explicit
    for s in sources:
        merged = merged.merged_over(s)
    return merged


def classes_origin(merged: Sidecar, fallback: str = "class names") -> str:
    return merged.origin or fallback


__all__ = ["ClassNames", "existing_file", "merge_metadata", "not_a_model_hint", "sniff"]
