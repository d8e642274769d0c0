"""TorchServe model archives (``.mar``): read as data, never run.

A ``.mar`` is a zip with ``MAR-INF/MANIFEST.json``; its ``model.serializedFile``
holds the weights. We load that file ourselves:

- a TorchScript module or a ``torch.export`` program: loaded directly;
- an eager state dict (archived with ``--model-file``): the archive's model
  file and handler are Python we will not execute, so the architecture must
  come from a factory the admin registers (``factory:pkg.mod:fn@model.mar``, or
  ``"factory"`` in the sidecar beside the archive).

The handler (``handler.py`` or a TorchServe built-in name) is never imported.
Metadata comes from ``input_spec.json`` and ``index_to_name.json`` inside the
archive, overridden by a sidecar beside it and then by explicit arguments.
"""

from __future__ import annotations

import dataclasses
import json
import tarfile
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from protolens_server.engine.types import InputSpec
from protolens_server.errors import InvalidArgument, InvalidModel
from protolens_server.models import export, factory, torchscript
from protolens_server.models._digest import file_sha256
from protolens_server.models._files import existing_file, merge_metadata, sniff
from protolens_server.models.handle import ModelHandle
from protolens_server.models.sidecar import Sidecar, find_sidecar, parse_class_names, parse_sidecar

MANIFEST = "MAR-INF/MANIFEST.json"
MAX_MEMBER_BYTES = 8 * 1024**3  # refuse absurd (zip-bomb) members before inflating them
_METADATA_MAX_BYTES = 16 * 1024**2


def load(
    path: str | Path,
    *,
    spec: InputSpec | None = None,
    class_names: Sequence[str] | None = None,
    device: str = "cpu",
    name: str | None = None,
    output: str | None = None,
    factory_ref: str | None = None,
) -> ModelHandle:
    p = existing_file(path)
    outside = find_sidecar(p)
    with _open(p) as zf:
        manifest = _manifest(zf, p)
        model = manifest.get("model") or {}
        serialized = model.get("serializedFile")
        if not isinstance(serialized, str) or not serialized:
            raise InvalidModel(f"{p}: the MANIFEST names no model.serializedFile")
        data = _read(zf, serialized, p, MAX_MEMBER_BYTES)
        inside = _embedded_metadata(zf, p)
    meta = merge_metadata(spec, class_names, outside, inside, output=output)
    model_name = name or str(model.get("modelName") or p.stem)
    info = {
        "mar_model_name": str(model.get("modelName", "")),
        "mar_model_version": str(model.get("modelVersion", "")),
        "mar_serialized_file": serialized,
        "mar_handler_not_run": str(model.get("handler", "")),
    }
    kind = sniff(data)
    origin = f"{p}!{serialized}"
    if kind == "torchscript":
        module = torchscript.read_torchscript(data, origin)
        return torchscript.handle_for(
            module, model_name, f"mar:{p}", file_sha256(p), meta, device, info
        )
    if kind == "exported":
        program = export.read_program(data, origin)
        return export.handle_for(
            program, model_name, f"mar:{p}", file_sha256(p), meta, device, info
        )
    target = factory_ref or outside.factory
    if target is None:
        model_file = model.get("modelFile")
        what = (
            f"an eager state dict with model file {model_file!r}"
            if model_file
            else ("not a TorchScript or torch.export file")
        )
        raise InvalidModel(
            f"{p}: serialized file {serialized!r} is {what}; protolens never runs code from "
            "an archive, so register the architecture as a factory: "
            f'factory:package.module:function@{p} (or "factory" in {p.stem}.json beside it)'
        )
    state = factory.read_state_dict(data, origin)
    target, _ = factory.parse_ref(target)
    return factory.handle_for(
        target, state, model_name, f"factory:{target}@{p}", meta, device, info
    )


def read_state(path: Path) -> bytes:
    """The raw serialized file of an archive (for ``factory:...@model.mar``)."""
    with _open(path) as zf:
        manifest = _manifest(zf, path)
        serialized = (manifest.get("model") or {}).get("serializedFile")
        if not isinstance(serialized, str) or not serialized:
            raise InvalidModel(f"{path}: the MANIFEST names no model.serializedFile")
        return _read(zf, serialized, path, MAX_MEMBER_BYTES)


def read_embedded_metadata(path: Path) -> Sidecar:
    with _open(path) as zf:
        _manifest(zf, path)
        return _embedded_metadata(zf, path)


def _open(p: Path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(p)
    except (zipfile.BadZipFile, OSError) as exc:
        if tarfile.is_tarfile(p):
            raise InvalidModel(
                f"{p}: a tgz model archive; re-create it with torch-model-archiver's "
                "default (zip) --archive-format"
            ) from exc
        raise InvalidModel(f"{p}: not a TorchServe .mar archive (not a zip file)") from exc


def _manifest(zf: zipfile.ZipFile, p: Path) -> dict[str, Any]:
    if MANIFEST not in zf.namelist():
        raise InvalidModel(f"{p}: not a TorchServe .mar archive (no {MANIFEST})")
    try:
        manifest = json.loads(_read(zf, MANIFEST, p, _METADATA_MAX_BYTES))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidModel(f"{p}: {MANIFEST} is not valid JSON") from exc
    if not isinstance(manifest, dict):
        raise InvalidModel(f"{p}: {MANIFEST} is not a JSON object")
    return manifest


def _read(zf: zipfile.ZipFile, member: str, p: Path, limit: int) -> bytes:
    try:
        info = zf.getinfo(member)
    except KeyError:
        raise InvalidModel(f"{p}: the archive has no {member!r}") from None
    if info.file_size > limit:
        raise InvalidModel(f"{p}: {member!r} is {info.file_size} bytes, over the {limit} limit")
    try:
        return zf.read(info)
    except (zipfile.BadZipFile, OSError, RuntimeError) as exc:
        raise InvalidModel(f"{p}: cannot read {member!r}: {exc}") from exc


def _embedded_metadata(zf: zipfile.ZipFile, p: Path) -> Sidecar:
    names = set(zf.namelist())
    sidecar = Sidecar()
    if "input_spec.json" in names:
        origin = f"{p}!input_spec.json"
        data = _json_member(zf, "input_spec.json", p)
        if isinstance(data, dict) and "factory" in data:
            raise InvalidArgument(
                f"{origin}: factory",
                "is not accepted inside an archive; put it in the sidecar beside the .mar",
            )
        sidecar = parse_sidecar(data, origin)
    if sidecar.classes is None and "index_to_name.json" in names:
        origin = f"{p}!index_to_name.json"
        classes = parse_class_names(_json_member(zf, "index_to_name.json", p), origin)
        sidecar = dataclasses.replace(
            sidecar, classes=classes, factory=None, origin=sidecar.origin or origin
        )
    return sidecar


def _json_member(zf: zipfile.ZipFile, member: str, p: Path) -> Any:
    try:
        return json.loads(_read(zf, member, p, _METADATA_MAX_BYTES))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidArgument(f"{p}!{member}", f"is not valid JSON: {exc}") from exc
