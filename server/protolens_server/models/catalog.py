"""The models a service may use: built-ins plus an admin's model store. Names only.

Store layout (``Settings.model_store``)::

    <store>/<name>.<pt|ts|pt2|mar|pth>      one model, no versions; optional <name>.json
    <store>/<name>/<version>/<file>         versioned: one model file per version folder,
                                            optional sidecar / index_to_name.json beside it

Callers name ``name`` (a flat model, or the latest version) or ``name@version``,
and, when the catalog serves an MLflow registry (``mlflow_tracking_uri``),
``models:/NAME/VERSION`` or ``models:/NAME@ALIAS`` (not listed by ``names``).
``previous(name)`` is the version registered before a name's.
Anything that looks like a path is refused: the catalog is how the service makes
sure it only loads what an admin registered. Loaded handles are kept in an
in-process LRU bounded by their parameter bytes; a model file replaced on disk
is reloaded (the cache key includes its size and mtime, and its sidecars').

With an ``Inspector`` (``from_settings``: the API and the workers) the catalog
never loads a model to describe it: ``show`` and ``describe`` use the inspection
made in a child process under limits (``inspection.py``), and ``load`` loads only
a model whose inspection found it READY. One broken or hostile file makes that
model UNUSABLE, with its reason; ``names`` and every other model are unaffected.

What ``show``/``describe`` answer is what callers of the service read (ListModels,
GetModel, job and check errors, check reports): paths inside the store are given
relative to it (``file:broken.pt``, ``broken.pt: not a TorchScript file``), never the
server's absolute store path; the full reason goes to the log (``models.unusable``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from protolens_server.errors import InvalidArgument, InvalidModel, ModelNotFound
from protolens_server.logging import get_logger
from protolens_server.models import builtin, mlflow
from protolens_server.models.handle import ModelHandle
from protolens_server.models.info import ModelInfo, ModelState
from protolens_server.models.inspection import (
    InspectionLimits,
    Inspector,
    Target,
    inspect_here,
    unusable_info,
)
from protolens_server.models.kinds import MODEL_SUFFIXES, is_model
from protolens_server.models.pretrained import folder_files, is_model_folder
from protolens_server.models.registry import load_mlflow, load_path
from protolens_server.models.sidecar import sidecar_paths
from protolens_server.registered_names import NAME, is_name

_NAME = NAME  # the rule for every registered name (registered_names.py)
_ListShown = 20
_LOGGED_MAX = 4096  # (name, reason) pairs of UNUSABLE models already logged
log = get_logger(__name__)


@dataclass(frozen=True)
class _Entry:
    name: str  # canonical
    version: str
    path: Path | None  # None for a built-in or an MLflow version
    uri: str = ""  # an MLflow version: models:/NAME/VERSION (or @ALIAS)
    tracking_uri: str = ""
    registry_signature: tuple[str, ...] = ()  # mlflow.signature(uri): run, source, update

    def signature(self) -> tuple[Any, ...]:
        """Name, path, and (size, mtime) of the file and of each sidecar that exists (for an
        MLflow version: what the registry says of it)."""
        if self.uri:
            return (self.name, self.tracking_uri, *self.registry_signature)
        if self.path is None:
            return (self.name,)
        try:
            st = self.path.stat()
        except FileNotFoundError:
            raise ModelNotFound(f"model {self.name!r} was removed", model=self.name) from None
        out: tuple[Any, ...] = (self.name, str(self.path), st.st_size, st.st_mtime_ns)
        for part in folder_files(self.path) if self.path.is_dir() else ():
            with contextlib.suppress(OSError):
                pst = part.stat()
                out += (part.name, pst.st_size, pst.st_mtime_ns)
        for extra in (*sidecar_paths(self.path), self.path.with_name("index_to_name.json")):
            try:
                est = extra.stat()
            except OSError:
                continue
            if extra != self.path:
                out += (extra.name, est.st_size, est.st_mtime_ns)
        return out

    def target(self) -> Target:
        if self.uri:
            sig = "\0".join(self.registry_signature)
            return Target(self.name, self.version, self.uri, self.tracking_uri, sig)
        return Target(self.name, self.version, None if self.path is None else str(self.path))


class ModelCatalog:
    def __init__(
        self,
        model_store: Path | str | None,
        builtins: bool = True,
        *,
        cache_bytes: int = 4 * 1024**3,
        inspector: Inspector | None = None,
        mlflow_tracking_uri: str | None = None,
    ) -> None:
        """``mlflow_tracking_uri``: None serves no MLflow registry; a URI (or "" / "env":
        ``MLFLOW_TRACKING_URI`` as mlflow reads it) makes ``models:/NAME/VERSION`` names."""
        self.store = Path(model_store).expanduser() if model_store else None
        self.mlflow = "" if mlflow_tracking_uri == "env" else mlflow_tracking_uri
        self.builtins = builtins
        self.cache_bytes = cache_bytes
        self.inspector = inspector
        self._handles: OrderedDict[tuple[Any, ...], tuple[ModelHandle, int]] = OrderedDict()
        self._infos: OrderedDict[tuple[Any, ...], ModelInfo] = OrderedDict()
        self._lock = threading.RLock()
        self._logged: OrderedDict[tuple[str, str], None] = OrderedDict()

    @classmethod
    def from_settings(cls, settings: Any, *, cache_bytes: int | None = None) -> ModelCatalog:
        """The service's catalog: models inspected in child processes under the settings'
        limits (``model_inspect_*``)."""
        return cls(
            settings.model_store,
            settings.builtin_models,
            cache_bytes=settings.model_cache_bytes if cache_bytes is None else cache_bytes,
            inspector=Inspector(InspectionLimits.from_settings(settings)),
            mlflow_tracking_uri=getattr(settings, "mlflow_tracking_uri", "") or None,
        )

    # -- listing ---------------------------------------------------------------
    def names(self) -> list[str]:
        """Every loadable name: built-ins, flat store models, and ``name@version``."""
        out = list(builtin.available()) if self.builtins else []
        flat, versioned = self._scan()
        out += sorted(flat)
        for name, versions in sorted(versioned.items()):
            out += [f"{name}@{v}" for v in versions]
        return sorted(dict.fromkeys(out))

    def versions(self, name: str) -> list[str]:
        """Versions of a versioned model, oldest first ([] for flat models/built-ins)."""
        base, _ = self._split(name)
        return self._scan()[1].get(base, [])

    def resolve(self, name: str) -> str:
        """The canonical name (``name@version`` for the latest of a versioned model)."""
        return self._entry(name).name

    def previous(self, name: str) -> str:
        """The version registered before ``name``'s: ``vision@1`` for ``vision@2`` (or for
        ``vision`` when 2 is the latest), the highest earlier version number for an MLflow
        ``models:/NAME/VERSION``. ``ModelNotFound`` when there is none, ``InvalidArgument``
        for a model without versions (a flat file or a built-in)."""
        entry = self._entry(name)
        if entry.uri:
            return mlflow.previous(entry.uri, self.mlflow or "")
        base, _ = self._split(name)
        versions = self._scan()[1].get(base, [])
        if not entry.version or entry.version not in versions:
            raise InvalidArgument(
                "baseline",
                f"'previous': model {entry.name!r} has no versions (a flat file or a built-in); "
                f"register versions as <store>/{base}/<version>/ or name the baseline",
            )
        at = versions.index(entry.version)
        if at == 0:
            raise ModelNotFound(
                f"'previous': {entry.name} is the first version of {base!r}; no earlier one to "
                "compare with (name the baseline, or check without one)",
                model=entry.name,
            )
        return f"{base}@{versions[at - 1]}"

    # -- describing and loading ------------------------------------------------
    def show(self, name: str, *, wait_s: float | None = None) -> ModelInfo:
        """The model's info in whatever state it is: READY, UNUSABLE (with the reason) or
        INSPECTING (when its inspection takes longer than ``wait_s``; None waits).
        Raises only for a name that is malformed or not in the catalog."""
        return self._public(self._show(name, wait_s))

    def _show(self, name: str, wait_s: float | None) -> ModelInfo:
        try:
            entry = self._entry(name)
        except InvalidModel as exc:  # this name's files are laid out wrongly in the store
            base, version = self._split(name)
            return ModelInfo.not_ready(f"{base}@{version}" if version else base, version, str(exc))
        key = entry.signature()
        if self.inspector is not None:  # keeps its answers, retrying a hit limit in time
            return self.inspector.inspect(entry.target(), key, wait_s)
        with self._lock:
            info = self._infos.get(key)
        if info is None:
            info = self._inspect_here(entry, key)
            with self._lock:
                self._infos[key] = info
                while len(self._infos) > _MAX_INFOS:
                    self._infos.popitem(last=False)
        return info

    def _public(self, info: ModelInfo) -> ModelInfo:
        """``info`` with the store's absolute path left out of its source and reason (callers
        of the service read both); an UNUSABLE model's full reason is logged once."""
        if self.store is None:
            return info
        source = relative_to_store(info.source, self.store)
        reason = relative_to_store(info.unusable_reason, self.store)
        if source == info.source and reason == info.unusable_reason:
            return info
        if info.state is ModelState.UNUSABLE and reason != info.unusable_reason:
            seen = (info.name, info.unusable_reason)
            with self._lock:
                first = seen not in self._logged
                self._logged[seen] = None
                while len(self._logged) > _LOGGED_MAX:
                    self._logged.popitem(last=False)
            if first:
                log.warning(
                    "models.unusable", extra={"model": info.name, "reason": info.unusable_reason}
                )
        return dataclasses.replace(info, source=source, unusable_reason=reason)

    def describe(self, name: str, *, wait_s: float | None = None) -> ModelInfo:
        """The info of a READY model; ``InvalidModel`` (UNUSABLE, with the reason and the
        fix) or ``FailedPrecondition`` (still INSPECTING, retry shortly) otherwise."""
        info = self.show(name, wait_s=wait_s)
        if info.state is not ModelState.READY:
            raise info.refusal()
        return info

    def load(self, name: str, device: str = "cpu") -> ModelHandle:
        """A loaded handle; with an inspector, only of a model inspected READY."""
        entry = self._entry(name)
        key = (*entry.signature(), str(device))
        with self._lock:
            hit = self._handles.get(key)
            if hit is not None:
                self._handles.move_to_end(key)
                return hit[0]
        if self.inspector is not None:
            self.describe(name)  # waits for the inspection; refuses an UNUSABLE model
        with self._lock:
            handle = self._load_entry(entry, device)
            self._handles[key] = (handle, _module_bytes(handle.module))
            self._infos.setdefault(key[:-1], ModelInfo.of(handle, entry.name, entry.version))
            self._evict()
            return handle

    def clear(self) -> None:
        with self._lock:
            self._handles.clear()
            self._infos.clear()

    # -- internals ---------------------------------------------------------------
    def _inspect_here(self, entry: _Entry, key: tuple[Any, ...]) -> ModelInfo:
        """Without an inspector (local use): describe from a loaded handle, or load one."""
        with self._lock:
            cached = next((h for k, (h, _) in self._handles.items() if k[:-1] == key), None)
        if cached is not None:
            return ModelInfo.of(cached, entry.name, entry.version)
        try:
            return inspect_here(entry.target())
        except (InvalidModel, InvalidArgument) as exc:
            return unusable_info(entry.target(), str(exc))

    def _load_entry(self, entry: _Entry, device: str) -> ModelHandle:
        if entry.uri:
            return load_mlflow(
                entry.uri, name=entry.name, device=device, tracking_uri=entry.tracking_uri
            )
        if entry.path is None:
            return builtin.load(entry.name, device=device)
        return load_path(entry.path, name=entry.name, device=device)

    def _evict(self) -> None:
        while len(self._handles) > 1 and sum(b for _, b in self._handles.values()) > (
            self.cache_bytes
        ):
            self._handles.popitem(last=False)

    def _split(self, name: str) -> tuple[str, str]:
        if not isinstance(name, str):
            raise InvalidArgument("model", "must be a model name")
        base, sep, version = name.strip().partition("@")
        for part in (base, version) if sep else (base,):
            if not is_name(part):
                raise InvalidArgument(
                    "model",
                    f"{name!r} is not a model name: models are named (name or name@version), "
                    "never given by path; ask an admin to register a file in the model store",
                )
        return base, version

    def _mlflow_entry(self, name: str) -> _Entry:
        if self.mlflow is None:
            raise InvalidArgument(
                "model",
                f"{name!r}: this server serves no MLflow registry (set mlflow_tracking_uri); "
                "name a model of its store",
            )
        uri = mlflow.canonical(name)
        signature = mlflow.signature(uri, self.mlflow)
        version = signature[0].rpartition("/")[2]
        return _Entry(uri, version, None, uri, self.mlflow, signature)

    def _entry(self, name: str) -> _Entry:
        if isinstance(name, str) and name.strip().startswith(mlflow.PREFIX):
            return self._mlflow_entry(name.strip())
        base, version = self._split(name)
        flat, versioned = self._scan()
        if not version:
            if base in flat:
                return self._flat_entry(base, flat[base])
            if versioned.get(base):
                version = versioned[base][-1]
            elif self.builtins and base in builtin.available():
                return _Entry(base, "", None)
        if version and version in versioned.get(base, []):
            assert self.store is not None
            folder = self.store / base / version
            files = _model_files(folder)
            if len(files) != 1:
                raise InvalidModel(
                    f"model store: {base}@{version} must hold exactly one model file "
                    f"({', '.join(MODEL_SUFFIXES)}), found {len(files)} in {base}/{version}/"
                )
            return _Entry(f"{base}@{version}", version, files[0])
        raise ModelNotFound(f"no model {name!r} (available: {self._available_text()})", model=name)

    def _flat_entry(self, base: str, files: list[Path]) -> _Entry:
        if len(files) != 1:
            listed = ", ".join(f.name for f in files)
            raise InvalidModel(
                f"model store: {base!r} has several model files ({listed}); keep one"
            )
        return _Entry(base, "", files[0])

    def _available_text(self) -> str:
        names = self.names()
        if not names:
            return "none registered"
        more = f", ... ({len(names)} in all)" if len(names) > _ListShown else ""
        return ", ".join(names[:_ListShown]) + more

    def _scan(self) -> tuple[dict[str, list[Path]], dict[str, list[str]]]:
        """Flat and versioned models; an unreadable folder is skipped, never an error."""
        flat: dict[str, list[Path]] = {}
        versioned: dict[str, list[str]] = {}
        if self.store is None or not self.store.is_dir():
            return flat, versioned
        for child in sorted(_listdir(self.store)):
            if child.name.startswith(".") or not _NAME.fullmatch(child.stem):
                continue
            if _is_model_folder(child):  # <store>/<name>/config.json: a flat HF/timm model
                if _NAME.fullmatch(child.name):
                    flat.setdefault(child.name, []).append(child)
            elif _is_model_file(child):
                flat.setdefault(child.stem, []).append(child)
            elif child.is_dir() and _NAME.fullmatch(child.name):
                versions = [
                    v.name
                    for v in _listdir(child)
                    if v.is_dir() and _NAME.fullmatch(v.name) and _model_files(v)
                ]
                if versions:
                    versioned[child.name] = sorted(versions, key=_version_key)
        return flat, versioned


_MAX_INFOS = 4096


def _listdir(folder: Path) -> list[Path]:
    try:
        return list(folder.iterdir())
    except OSError:  # unreadable (permissions) or removed meanwhile
        return []


def _is_model_file(p: Path) -> bool:
    try:
        return p.is_file() and p.suffix.lower() in MODEL_SUFFIXES
    except OSError:
        return False


def _is_model_folder(p: Path) -> bool:
    return is_model_folder(p)


def _model_files(folder: Path) -> list[Path]:
    """The models in a version folder: the folder itself when it is a Hugging Face/timm
    model folder, else each model file or model folder in it."""
    if _is_model_folder(folder):
        return [folder]
    return sorted(f for f in _listdir(folder) if is_model(f))


def _version_key(v: str) -> tuple[tuple[int, int | str], ...]:
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in re.split(r"[.\-_]", v))


__all__ = ["ModelCatalog", "ModelInfo", "ModelState"]


def _module_bytes(module: Any) -> int:
    if not hasattr(module, "parameters"):
        return 0
    tensors = [*module.parameters(), *getattr(module, "buffers", list)()]
    return sum(t.numel() * t.element_size() for t in tensors)


def relative_to_store(text: str, store: Path) -> str:
    """``text`` with each path inside ``store`` made relative to it (as given and resolved),
    and the store's own path said as "the model store"."""
    roots = {str(store).rstrip(os.sep), str(store.resolve()).rstrip(os.sep)}
    for root in sorted(roots, key=len, reverse=True):
        text = text.replace(root + os.sep, "")
        text = re.sub(re.escape(root) + r"(?![\w.@+~-])", "the model store", text)
    return text
