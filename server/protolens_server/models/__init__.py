"""Model sources turned into one ``ModelHandle``: a frozen callable, its input spec,
class names and a content digest.

- ``load_model(ref)``: built-in name, TorchScript/``.pt2``/``.mar`` path, or
  ``factory:pkg.mod:fn@weights.pth`` (local use: CLI, notebooks);
- ``ModelCatalog``: the models an admin registered (service use: names only);
- ``resolve_class``: a class index or name -> output index.
"""

from protolens_server.models.catalog import ModelCatalog, ModelInfo
from protolens_server.models.classes import resolve_class
from protolens_server.models.handle import ModelHandle
from protolens_server.models.registry import load_model


def builtin_models() -> list[str]:
    from protolens_server.models import builtin

    return builtin.available()


__all__ = [
    "ModelCatalog",
    "ModelHandle",
    "ModelInfo",
    "builtin_models",
    "load_model",
    "resolve_class",
]
