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
def downloaded(uri: str, tracking_uri: str = "") -> Iterator[tuple[Path, str]]:
    """The registered version's artifacts in a temporary folder: yields its one model
    (file or Hugging Face/timm folder) and a default name (``NAME@VERSION``). The caller
    loads it (``registry.load_mlflow``); this module never imports a loader.
    ``tracking_uri`` ("" for mlflow's own environment variables) serves as the registry
    URI too, so a process whose environment is older than the setting finds it."""
    reg_name, version = parse(uri)
    mlflow, mlflow_exception = _mlflow(uri)
    with tempfile.TemporaryDirectory(prefix="protolens-mlflow-") as tmp:
        try:
            client = _registry(mlflow, tracking_uri)
            mv = _model_version(client, reg_name, version)
            source = client.get_model_version_download_uri(reg_name, mv.version)
            local = Path(
                mlflow.artifacts.download_artifacts(
                    artifact_uri=source, dst_path=tmp, tracking_uri=tracking_uri or None
                )
            )
        except mlflow_exception as exc:
            raise _not_found_or_invalid(uri, exc) from exc
        yield _model_file(uri, local), f"{reg_name}@{version.lstrip('@')}"


def versions(name: str, tracking_uri: str = "") -> list[str]:
    """The registered versions of ``name``, oldest first (by version number)."""
    mlflow, mlflow_exception = _mlflow(f"{PREFIX}{name}")
    try:
        found = _registry(mlflow, tracking_uri).search_model_versions(f"name = '{_quoted(name)}'")
    except mlflow_exception as exc:
        raise _not_found_or_invalid(f"{PREFIX}{name}", exc) from exc
    return [str(v) for v in sorted(int(mv.version) for mv in found)]


def signature(uri: str, tracking_uri: str = "") -> tuple[str, ...]:
    """What identifies a registered version's content without downloading it: its run,
    source and last update (an alias resolves to the version it names now)."""
    reg_name, version = parse(uri)
    mlflow, mlflow_exception = _mlflow(uri)
    try:
        mv = _model_version(_registry(mlflow, tracking_uri), reg_name, version)
    except mlflow_exception as exc:
        raise _not_found_or_invalid(uri, exc) from exc
    return (
        f"{PREFIX}{reg_name}/{mv.version}",
        str(mv.run_id or ""),
        str(mv.source or ""),
        str(mv.last_updated_timestamp or ""),
    )


def _mlflow(uri: str) -> tuple[Any, type[Exception]]:
    try:
        import mlflow
        from mlflow.exceptions import MlflowException
    except ModuleNotFoundError as exc:
        raise InvalidModel(
            f"{uri}: MLflow models need the mlflow client: pip install 'protolens[registry]'"
        ) from exc
    return mlflow, MlflowException


def _registry(mlflow: Any, tracking_uri: str) -> Any:
    uri = tracking_uri or None
    return mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)


def _model_version(client: Any, name: str, version: str) -> Any:
    if version.startswith("@"):
        return client.get_model_version_by_alias(name, version[1:])
    return client.get_model_version(name, version)


def previous(uri: str, tracking_uri: str = "") -> str:
    """The registered version before ``uri``'s (``models:/NAME/VERSION`` or an alias):
    the highest version number below it. ``ModelNotFound`` when it is the first."""
    reg_name, _ = parse(uri)
    current = int(signature(uri, tracking_uri)[0].rpartition("/")[2])
    earlier = [v for v in versions(reg_name, tracking_uri) if int(v) < current]
    if not earlier:
        raise ModelNotFound(
            f"{uri}: no earlier registered version of {reg_name!r} to compare with "
            f"(version {current} is the first); name the baseline, or check without one",
            model=uri,
        )
    return f"{PREFIX}{reg_name}/{earlier[-1]}"


def canonical(uri: str) -> str:
    """``models:/NAME/VERSION`` as written (an alias stays an alias)."""
    reg_name, version = parse(uri)
    return (
        f"{PREFIX}{reg_name}@{version[1:]}"
        if version.startswith("@")
        else f"{PREFIX}{reg_name}/{version}"
    )


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
