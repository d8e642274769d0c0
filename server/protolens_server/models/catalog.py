"""The models a service may use: built-ins plus an admin's model store. Names only.

Store layout (``Settings.model_store``)::

    <store>/<name>.<pt|ts|pt2|mar|pth>      one model, no versions; optional <name>.json
    <store>/<name>/<version>/<file>         versioned: one model file per version folder,
                                            optional sidecar / index_to_name.json beside it

Callers name ``name`` (a flat model, or the latest version) or ``name@version``.
Anything that looks like a path is refused: the catalog is how the service makes
sure it only loads what an admin registered. Loaded handles are kept in an
in-process LRU bounded by their parameter bytes; a model file replaced on disk
is reloaded (the cache key includes its size and mtime).
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from protolens_server.engine.types import InputSpec
from protolens_server.errors import InvalidArgument, InvalidModel, ModelNotFound
from protolens_server.models import builtin
from protolens_server.models.handle import ModelHandle
from protolens_server.models.registry import MODEL_SUFFIXES, load_path

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_ListShown = 20


@dataclass(frozen=True)
class ModelInfo:
    """What a caller may know about a model without loading it on a device."""

    name: str  # canonical: "name" or "name@version"
    source: str
    format: str
    input_spec: InputSpec
    num_classes: int
    class_names: tuple[str, ...]
    digest: str
    description: str = ""
    version: str = ""
    class_aliases: tuple[tuple[str, ...], ...] = field(default=(), repr=False)

    @classmethod
    def of(cls, handle: ModelHandle, name: str, version: str = "") -> ModelInfo:
        return cls(
            name=name,
            source=handle.source,
            format=handle.format,
            input_spec=handle.input_spec,
            num_classes=handle.num_classes,
            class_names=handle.class_names,
            digest=handle.digest,
            description=handle.description,
            version=version,
            class_aliases=handle.class_aliases,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "source": self.source,
            "format": self.format,
            "input_spec": self.input_spec.to_dict(),
            "num_classes": self.num_classes,
            "class_names": list(self.class_names),
            "digest": self.digest,
            "description": self.description,
        }


@dataclass(frozen=True)
class _Entry:
    name: str  # canonical
    version: str
    path: Path | None  # None for a built-in

    def signature(self) -> tuple[Any, ...]:
        if self.path is None:
            return (self.name,)
        st = self.path.stat()
        return (self.name, str(self.path), st.st_size, st.st_mtime_ns)


class ModelCatalog:
    def __init__(
        self,
        model_store: Path | str | None,
        builtins: bool = True,
        *,
        cache_bytes: int = 4 * 1024**3,
    ) -> None:
        self.store = Path(model_store).expanduser() if model_store else None
        self.builtins = builtins
        self.cache_bytes = cache_bytes
        self._handles: OrderedDict[tuple[Any, ...], tuple[ModelHandle, int]] = OrderedDict()
        self._infos: dict[tuple[Any, ...], ModelInfo] = {}
        self._lock = threading.RLock()

    @classmethod
    def from_settings(cls, settings: Any) -> ModelCatalog:
        return cls(
            settings.model_store, settings.builtin_models, cache_bytes=settings.model_cache_bytes
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

    # -- describing and loading ------------------------------------------------
    def describe(self, name: str) -> ModelInfo:
        entry = self._entry(name)
        key = entry.signature()
        with self._lock:
            info = self._infos.get(key)
            if info is not None:
                return info
            cached = next((h for k, (h, _) in self._handles.items() if k[:-1] == key), None)
            handle = cached or self._load_entry(entry, "cpu")
            info = ModelInfo.of(handle, entry.name, entry.version)
            self._infos[key] = info
            return info

    def load(self, name: str, device: str = "cpu") -> ModelHandle:
        entry = self._entry(name)
        key = (*entry.signature(), str(device))
        with self._lock:
            hit = self._handles.get(key)
            if hit is not None:
                self._handles.move_to_end(key)
                return hit[0]
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
    def _load_entry(self, entry: _Entry, device: str) -> ModelHandle:
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
            if not _NAME.fullmatch(part) or ".." in part:
                raise InvalidArgument(
                    "model",
                    f"{name!r} is not a model name: models are named (name or name@version), "
                    "never given by path; ask an admin to register a file in the model store",
                )
        return base, version

    def _entry(self, name: str) -> _Entry:
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
                    f"({', '.join(MODEL_SUFFIXES)}), found {len(files)} in {folder}"
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
        flat: dict[str, list[Path]] = {}
        versioned: dict[str, list[str]] = {}
        if self.store is None or not self.store.is_dir():
            return flat, versioned
        for child in sorted(self.store.iterdir()):
            if child.name.startswith(".") or not _NAME.fullmatch(child.stem):
                continue
            if child.is_file() and child.suffix.lower() in MODEL_SUFFIXES:
                flat.setdefault(child.stem, []).append(child)
            elif child.is_dir() and _NAME.fullmatch(child.name):
                versions = [
                    v.name
                    for v in child.iterdir()
                    if v.is_dir() and _NAME.fullmatch(v.name) and _model_files(v)
                ]
                if versions:
                    versioned[child.name] = sorted(versions, key=_version_key)
        return flat, versioned


def _model_files(folder: Path) -> list[Path]:
    return sorted(f for f in folder.iterdir() if f.is_file() and f.suffix.lower() in MODEL_SUFFIXES)


def _version_key(v: str) -> tuple[tuple[int, int | str], ...]:
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in re.split(r"[.\-_]", v))


def _module_bytes(module: Any) -> int:
    if not hasattr(module, "parameters"):
        return 0
    tensors = [*module.parameters(), *getattr(module, "buffers", list)()]
    return sum(t.numel() * t.element_size() for t in tensors)
