"""MLflow model registry: ``models:/NAME/VERSION`` (or ``models:/NAME@alias``).

The registered version's artifacts are downloaded through the mlflow client
(tracking/registry URI from ``MLFLOW_TRACKING_URI``/``MLFLOW_REGISTRY_URI`` as
mlflow itself reads them) into a temporary folder, and the one model file among
them - TorchScript, a ``torch.export`` ``.pt2`` program, or a TorchServe
``.mar`` - is loaded by the ordinary loader, sidecar JSON included. The digest
is that file's, so the same weights registered in MLflow and in the model store
share cache entries.

What is never done: ``mlflow.pyfunc.load_model`` / ``mlflow.pytorch.load_model``
(they unpickle Python objects, which runs code). Register the model as a plain
artifact folder holding a ``.pt2`` (recommended) or TorchScript file; an
MLflow pytorch-flavour ``data/model.pth`` pickle is refused with that advice.
Needs the ``registry`` extra: ``pip install 'protolens[registry]'``.
"""

from __future__ import annotations

import dataclasses
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path

from protolens_server.engine.types import InputSpec
from protolens_server.errors import InvalidArgument, InvalidModel, ModelNotFound
from protolens_server.models.handle import ModelHandle

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


def load(
    uri: str,
    *,
    spec: InputSpec | None = None,
    class_names: Sequence[str] | None = None,
    device: str = "cpu",
    name: str | None = None,
) -> ModelHandle:
    """Download the registered version's artifacts and load its one model file."""
    reg_name, version = parse(uri)
    try:
        import mlflow
        from mlflow.exceptions import MlflowException
    except ModuleNotFoundError as exc:
        raise InvalidModel(
            f"{uri}: MLflow models need the mlflow client: pip install 'protolens[registry]'"
        ) from exc
    from protolens_server.models.registry import load_path

    with tempfile.TemporaryDirectory(prefix="protolens-mlflow-") as tmp:
        try:
            local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=tmp))
        except MlflowException as exc:
            code = str(getattr(exc, "error_code", ""))
            if "RESOURCE_DOES_NOT_EXIST" in code or "not found" in str(exc).lower():
                raise ModelNotFound(f"{uri}: no such registered model version", model=uri) from exc
            raise InvalidModel(f"{uri}: MLflow could not provide it: {exc.message}") from exc
        model_file = _model_file(uri, local)
        handle = load_path(
            model_file,
            spec=spec,
            class_names=class_names,
            device=device,
            name=name or f"{reg_name}@{version.lstrip('@')}",
        )
    metadata = {**handle.metadata, "mlflow_uri": uri, "mlflow_file": model_file.name}
    return dataclasses.replace(handle, source=f"mlflow:{uri}", metadata=metadata)


def _model_file(uri: str, folder: Path) -> Path:
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    found = [p for p in files if p.suffix.lower() in _LOADABLE]
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
            f"{uri}: no .pt2, TorchScript or .mar file among its artifacts ({listed}){hint}; "
            "log the model as a torch.export .pt2 file (mlflow.log_artifact) and register that"
        )
    raise InvalidModel(f"{uri}: several model files among its artifacts ({listed}); keep one")
