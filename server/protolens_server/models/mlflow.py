"""MLflow model registry: ``models:/NAME/VERSION`` (or ``models:/NAME@alias``).

The registered version's artifacts are downloaded through the mlflow client
(tracking/registry URI from ``MLFLOW_TRACKING_URI``/``MLFLOW_REGISTRY_URI`` as
mlflow itself reads them) into a temporary folder, and the one model file among
them - TorchScript, a ``torch.export`` ``.pt2`` program, a TorchServe
``.mar``, or a Hugging Face/timm model folder - is loaded by the ordinary loader
(``registry.load_mlflow``; this module imports no loader), sidecar JSON included. The digest
is that file's, so the same weights registered in MLflow and in the model store
share cache entries.

What is never done: ``mlflow.pyfunc.load_model`` / ``mlflow.pytorch.load_model``
(they unpickle Python objects, which runs code). Register the model as a plain
artifact folder holding a ``.pt2`` (recommended) or TorchScript file; an
MLflow pytorch-flavour ``data/model.pth`` pickle is refused with that advice.
Needs the ``registry`` extra: ``pip install 'protolens[registry]'``.
"""

from __future__ import annotations

import contextlib
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from protolens_server.errors import InvalidArgument, InvalidModel, ModelNotFound
from protolens_server.models.pretrained import is_model_folder

PREFIX = "models:/"
_URI = re.compile(r"models:/(?P<name>[^/@]+)(?:/(?P<version>[^/]+)|@(?P<alias>[^/]+))")
_LOADABLE = (".pt2", ".pt", ".ts", ".jit", ".torchscript", ".mar")


def parse(uri: str) -> tuple[str, str]:
    """(registered name, version or ``@alias``) of a ``models:/`` URI."""
    m = _URI.fullmatch(uri.strip())
    if not m:
        raise InvalidArgument(
            "model",
            f"{uri!r} is not an MLflow model URI: use models:/NAME/VERSION or models:/NAME@ALIAS",
        )
    return m["name"], m["version"] or f"@{m['alias']}"


@contextlib.contextmanager
def downloaded(uri: str) -> Iterator[tuple[Path, str]]:
    """The registered version's artifacts in a temporary folder: yields its one model
    (file or Hugging Face/timm folder) and a default name (``NAME@VERSION``). The caller
    loads it (``registry.load_mlflow``); this module never imports a loader."""
    reg_name, version = parse(uri)
    mlflow, mlflow_exception = _client(uri)
    with tempfile.TemporaryDirectory(prefix="protolens-mlflow-") as tmp:
        try:
            local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=tmp))
        except mlflow_exception as exc:
            raise _not_found_or_invalid(uri, exc) from exc
        yield _model_file(uri, local), f"{reg_name}@{version.lstrip('@')}"


def versions(name: str) -> list[str]:
    """The registered versions of ``name``, oldest first (by version number)."""
    mlflow, mlflow_exception = _client(f"{PREFIX}{name}")
    try:
        found = mlflow.MlflowClient().search_model_versions(f"name = '{_quoted(name)}'")
    except mlflow_exception as exc:
        raise _not_found_or_invalid(f"{PREFIX}{name}", exc) from exc
    return [str(v) for v in sorted(int(mv.version) for mv in found)]


def signature(uri: str) -> tuple[str, ...]:
    """What identifies a registered version's content without downloading it: its run,
    source and last update (an alias resolves to the version it names now)."""
    reg_name, version = parse(uri)
    mlflow, mlflow_exception = _client(uri)
    client = mlflow.MlflowClient()
    try:
        if version.startswith("@"):
            mv = client.get_model_version_by_alias(reg_name, version[1:])
        else:
            mv = client.get_model_version(reg_name, version)
    except mlflow_exception as exc:
        raise _not_found_or_invalid(uri, exc) from exc
    return (
        f"{PREFIX}{reg_name}/{mv.version}",
        str(mv.run_id or ""),
        str(mv.source or ""),
        str(mv.last_updated_timestamp or ""),
    )


def _client(uri: str) -> tuple[Any, type[Exception]]:
    try:
        import mlflow
        from mlflow.exceptions import MlflowException
    except ModuleNotFoundError as exc:
        raise InvalidModel(
            f"{uri}: MLflow models need the mlflow client: pip install 'protolens[registry]'"
        ) from exc
    return mlflow, MlflowException


def _not_found_or_invalid(uri: str, exc: Any) -> Exception:
    code = str(getattr(exc, "error_code", ""))
    if "RESOURCE_DOES_NOT_EXIST" in code or "not found" in str(exc).lower():
        return ModelNotFound(f"{uri}: no such registered model version", model=uri)
    return InvalidModel(f"{uri}: MLflow could not provide it: {getattr(exc, 'message', exc)}")


def _quoted(name: str) -> str:
    if "'" in name:
        raise InvalidArgument("model", f"{name!r}: a registered model name has no quote")
    return name


def _model_file(uri: str, folder: Path) -> Path:
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    folders = sorted({p for p in [folder, *folder.rglob("*")] if p.is_dir() and is_model_folder(p)})
    found = [*folders, *(p for p in files if p.suffix.lower() in _LOADABLE)]
    if len(found) == 1:
        return found[0]
    listed = ", ".join(str(p.relative_to(folder)) for p in files[:10]) or "nothing"
    if not found:
        pickled = any(p.suffix.lower() in (".pth", ".pkl", ".pickle") for p in files)
        hint = (
            " (a pickled model: protolens does not unpickle, since that runs code)"
            if pickled
            else ""
        )
        raise InvalidModel(
            f"{uri}: no .pt2, TorchScript or .mar file or Hugging Face/timm model folder among "
            f"its artifacts ({listed}){hint}; log the model as a torch.export .pt2 file "
            "(mlflow.log_artifact) and register that"
        )
    raise InvalidModel(f"{uri}: several model files among its artifacts ({listed}); keep one")
