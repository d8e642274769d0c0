"""``load_model``: one reference string -> the right loader.

References, by scheme first, then by file suffix (``kinds.py``):

=====================================  ==============================================
``efficientnet_lite0``                 a built-in (also ``builtin:efficientnet_lite0``)
``m.pt``, ``m.ts``                     TorchScript (also ``torchscript:PATH``)
``m.pt2``                              a torch.export program (also ``export:PATH``)
``m.mar``                              a TorchServe archive (also ``mar:PATH``)
``folder/`` with ``config.json``       a transformers classifier or a timm model
                                       (also ``hf:PATH``, ``timm:PATH``)
``models:/NAME/VERSION``               an MLflow registry version (``models/mlflow.py``)
``factory:pkg.mod:fn@weights.pth``     an eager factory + state dict (or ``@m.mar``)
``m.pth`` with ``"factory"`` sidecar   the same, the factory named beside the weights
=====================================  ==============================================

Every path goes through ``load_path``, which dispatches once on ``kinds.kind_of``.
Paths are for local use (the CLI, notebooks). The service goes through
``ModelCatalog``, which accepts names (and, when enabled, ``models:/`` URIs).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path

from protolens_server.engine.types import InputSpec
from protolens_server.errors import InvalidArgument, InvalidModel, ModelNotFound
from protolens_server.models import builtin, export, factory, mar, mlflow, torchscript
from protolens_server.models._files import not_a_model_hint, sniff
from protolens_server.models.handle import ModelHandle
from protolens_server.models.kinds import (
    MODEL_SUFFIXES,
    SCHEME_KINDS,
    Kind,
    kind_of,
)
from protolens_server.models.sidecar import AUTO, find_sidecar, parse_output

SCHEMES = ("builtin", "factory", *SCHEME_KINDS)
Loader = Callable[..., ModelHandle]


def _hf(path: Path, **kw: object) -> ModelHandle:
    from protolens_server.models import hf  # imports transformers only when needed

    return hf.load(path, **kw)  # type: ignore[arg-type]


def _timm(path: Path, **kw: object) -> ModelHandle:
    from protolens_server.models import timm_models

    return timm_models.load(path, **kw)  # type: ignore[arg-type]


def _state_dict(path: Path, **kw: object) -> ModelHandle:
    target = find_sidecar(path).factory
    if target is None:
        raise InvalidModel(
            f"{path}: a state dict needs its architecture: load it as "
            f'factory:package.module:function@{path}, or put "factory" in {path.stem}.json '
            "beside it"
        )
    return factory.load(target, path, **kw)  # type: ignore[arg-type]


_LOADERS: dict[Kind, Loader] = {
    "torchscript": torchscript.load,
    "exported": export.load,
    "mar": mar.load,
    "state_dict": _state_dict,
    "transformers": _hf,
    "timm": _timm,
}


def load_model(
    ref: str,
    *,
    spec: InputSpec | None = None,
    class_names: Sequence[str] | None = None,
    device: str = "cpu",
    name: str | None = None,
    output: str | None = None,
) -> ModelHandle:
    """Load a model from a built-in name, a path, a factory or an MLflow URI (module doc).

    ``output`` declares what the forward returns where loading cannot tell
    (``sidecar.OUTPUTS``: ``multi-label-logits``); it wins over a sidecar's."""
    ref = ref.strip()
    kw = {"spec": spec, "class_names": class_names, "device": device, "name": name}
    if output:
        kw["output"] = output
    if ref.startswith(mlflow.PREFIX):
        return load_mlflow(ref, **kw)  # type: ignore[arg-type]
    scheme, sep, rest = ref.partition(":")
    if sep and scheme == "builtin":
        return _builtin(rest, device, output)
    if sep and scheme == "factory":
        target, weights = factory.parse_ref(rest)
        if weights is None:
            return factory.load(target, **kw)  # type: ignore[arg-type]
        return load_path(Path(weights).expanduser(), factory_ref=target, **kw)  # type: ignore[arg-type]
    if sep and scheme in SCHEME_KINDS:
        return load_path(Path(rest).expanduser(), kind=SCHEME_KINDS[scheme], **kw)  # type: ignore[arg-type]
    if ref in builtin.available():
        return _builtin(ref, device, output)
    path = Path(ref).expanduser()
    if not path.exists():
        raise ModelNotFound(
            f"no model {ref!r}: not a built-in ({', '.join(builtin.available())}) and no such file",
            model=ref,
        )
    return load_path(path, **kw)  # type: ignore[arg-type]


def _builtin(name: str, device: str, output: str | None) -> ModelHandle:
    """A built-in (each a single-label classifier: a declared multi-label output is an
    error, not ignored)."""
    if output and parse_output(output) != AUTO:
        raise InvalidArgument("output", f"the built-in {name!r} is a single-label classifier")
    return builtin.load(name, device=device)


def load_path(
    path: Path,
    *,
    spec: InputSpec | None = None,
    class_names: Sequence[str] | None = None,
    device: str = "cpu",
    name: str | None = None,
    factory_ref: str | None = None,
    kind: Kind | None = None,
    output: str | None = None,
) -> ModelHandle:
    """Load a model file or folder: its kind from ``kind``, else ``kinds.kind_of``."""
    path = Path(path).expanduser()
    if not path.exists():
        raise ModelNotFound(f"{path}: no such model file", model=str(path))
    kw = {"spec": spec, "class_names": class_names, "device": device, "name": name}
    kw["output"] = output
    if factory_ref is not None:
        if path.suffix.lower() == ".mar":
            return mar.load(path, factory_ref=factory_ref, **kw)  # type: ignore[arg-type]
        return factory.load(factory_ref, path, **kw)  # type: ignore[arg-type]
    kind = kind or kind_of(path)
    loader = _LOADERS.get(kind)
    if loader is not None:
        return loader(path, **kw)
    if path.is_dir():
        raise InvalidModel(
            f"{path}: a folder, but not a model folder (config.json of a transformers or timm "
            "model plus *.safetensors weights)"
        )
    raise InvalidModel(
        f"{path}: not a TorchScript (.pt/.ts), torch.export (.pt2), TorchServe (.mar), "
        f"state-dict or Hugging Face/timm model{not_a_model_hint(sniff(path), path)}"
    )


def load_mlflow(uri: str, *, tracking_uri: str = "", **kw: object) -> ModelHandle:
    """An MLflow registry version: its artifacts downloaded, its one model loaded here."""
    with mlflow.downloaded(uri, tracking_uri) as (local, default_name):
        handle = load_path(local, **{**kw, "name": kw.get("name") or default_name})  # type: ignore[arg-type]
        metadata = {**handle.metadata, "mlflow_uri": uri, "mlflow_file": local.name}
    return dataclasses.replace(handle, source=f"mlflow:{uri}", metadata=metadata)


__all__ = ["MODEL_SUFFIXES", "SCHEMES", "load_model", "load_path"]
