"""``load_model``: one reference string -> the right loader.

References, by scheme first, then by file suffix:

=====================================  ==============================================
``efficientnet_lite0``                 a built-in (also ``builtin:efficientnet_lite0``)
``m.pt``, ``m.ts``                     TorchScript (also ``torchscript:PATH``)
``m.pt2``                              a torch.export program (also ``export:PATH``)
``m.mar``                              a TorchServe archive (also ``mar:PATH``)
``models:/NAME/VERSION``               an MLflow registry version (``models/mlflow.py``)
``factory:pkg.mod:fn@weights.pth``     an eager factory + state dict (or ``@m.mar``)
``m.pth`` with ``"factory"`` sidecar   the same, the factory named beside the weights
=====================================  ==============================================

Paths are for local use (the CLI, notebooks). The service goes through
``ModelCatalog``, which accepts names only.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from protolens_server.engine.types import InputSpec
from protolens_server.errors import InvalidModel, ModelNotFound
from protolens_server.models import builtin, export, factory, mar, mlflow, torchscript
from protolens_server.models._files import existing_file, not_a_model_hint, sniff
from protolens_server.models.handle import ModelHandle
from protolens_server.models.sidecar import find_sidecar

SCHEMES = ("builtin", "torchscript", "export", "mar", "factory")
TORCHSCRIPT_SUFFIXES = (".pt", ".ts", ".jit", ".torchscript")
EXPORT_SUFFIXES = (".pt2",)
MAR_SUFFIXES = (".mar",)
STATE_DICT_SUFFIXES = (".pth", ".bin", ".ckpt")
MODEL_SUFFIXES = TORCHSCRIPT_SUFFIXES + EXPORT_SUFFIXES + MAR_SUFFIXES + STATE_DICT_SUFFIXES


def load_model(
    ref: str,
    *,
    spec: InputSpec | None = None,
    class_names: Sequence[str] | None = None,
    device: str = "cpu",
    name: str | None = None,
) -> ModelHandle:
    """Load a model from a built-in name, a file path or a factory reference (see module doc)."""
    ref = ref.strip()
    if ref.startswith("models:/"):  # an MLflow registry version (models/mlflow.py)
        return mlflow.load(ref, spec=spec, class_names=class_names, device=device, name=name)
    scheme, sep, rest = ref.partition(":")
    if sep and scheme in SCHEMES:
        return _load_scheme(scheme, rest, spec, class_names, device, name)
    if ref in builtin.available():
        return builtin.load(ref, device=device)
    path = Path(ref).expanduser()
    if not path.exists():
        raise ModelNotFound(
            f"no model {ref!r}: not a built-in ({', '.join(builtin.available())}) and no such file",
            model=ref,
        )
    return load_path(path, spec=spec, class_names=class_names, device=device, name=name)


def load_path(
    path: Path,
    *,
    spec: InputSpec | None = None,
    class_names: Sequence[str] | None = None,
    device: str = "cpu",
    name: str | None = None,
    factory_ref: str | None = None,
) -> ModelHandle:
    """Load a model file by its suffix (or its contents when the suffix says nothing)."""
    p = existing_file(path)
    kw = {"spec": spec, "class_names": class_names, "device": device, "name": name}
    suffix = p.suffix.lower()
    if factory_ref is not None:
        if suffix in MAR_SUFFIXES:
            return mar.load(p, factory_ref=factory_ref, **kw)
        return factory.load(factory_ref, p, **kw)
    if suffix in TORCHSCRIPT_SUFFIXES:
        return torchscript.load(p, **kw)
    if suffix in EXPORT_SUFFIXES:
        return export.load(p, **kw)
    if suffix in MAR_SUFFIXES:
        return mar.load(p, **kw)
    if suffix in STATE_DICT_SUFFIXES:
        target = find_sidecar(p).factory
        if target is None:
            raise InvalidModel(
                f"{p}: a state dict needs its architecture: load it as "
                f'factory:package.module:function@{p}, or put "factory" in {p.stem}.json '
                "beside it"
            )
        return factory.load(target, p, **kw)
    kind = sniff(p)
    if kind == "torchscript":
        return torchscript.load(p, **kw)
    if kind == "exported":
        return export.load(p, **kw)
    if kind == "mar":
        return mar.load(p, **kw)
    raise InvalidModel(
        f"{p}: not a TorchScript (.pt/.ts), torch.export (.pt2), TorchServe (.mar) or "
        f"state-dict model file{not_a_model_hint(kind)}"
    )


def _load_scheme(
    scheme: str,
    rest: str,
    spec: InputSpec | None,
    class_names: Sequence[str] | None,
    device: str,
    name: str | None,
) -> ModelHandle:
    kw = {"spec": spec, "class_names": class_names, "device": device, "name": name}
    if scheme == "builtin":
        return builtin.load(rest, device=device)
    if scheme == "factory":
        target, weights = factory.parse_ref(rest)
        if weights is None:
            return factory.load(target, **kw)
        return load_path(Path(weights).expanduser(), factory_ref=target, **kw)
    loader = {"torchscript": torchscript.load, "export": export.load, "mar": mar.load}[scheme]
    return loader(Path(rest).expanduser(), **kw)
