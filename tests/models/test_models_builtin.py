"""The built-in ImageNet EfficientNet-Lite0: offline load, right scaling, right names."""

from __future__ import annotations

import pytest
import skimage.data
import torch
from protolens_server.errors import ModelNotFound
from protolens_server.imageio import load_image
from protolens_server.models import builtin_models, load_model, resolve_class


@pytest.fixture(scope="module")
def lite0():
    return load_model("efficientnet_lite0")


def test_coffee_photo_is_espresso(lite0) -> None:
    x = load_image(skimage.data.coffee(), 224, 224)
    with torch.no_grad():
        probs = lite0.module(lite0.input_spec.normalise(x[None])).softmax(-1)[0]
    assert int(probs.argmax()) == 967
    assert lite0.class_names[967] == "espresso"
    assert float(probs[967]) > 0.9


def test_spec_names_and_frozen(lite0) -> None:
    spec = lite0.input_spec
    assert spec.shape == (3, 224, 224)
    # (255x - 127) / 128 == (x - 127/255) / (128/255)
    x = torch.tensor([0.0, 0.5, 1.0]).view(1, 1, 1, 3).expand(1, 3, 1, 3)
    torch.testing.assert_close(spec.normalise(x), (255 * x - 127) / 128)
    assert lite0.num_classes == 1000
    assert lite0.class_names[281] == "tabby cat"
    assert lite0.class_names[207] == "Golden Retriever"
    assert lite0.format == "eager" and lite0.source == "builtin:efficientnet_lite0"
    assert not lite0.module.training
    assert not any(p.requires_grad for p in lite0.module.parameters())


def test_digest_is_stable_across_loads(lite0) -> None:
    again = load_model("builtin:efficientnet_lite0")
    assert again.digest == lite0.digest and len(lite0.digest) == 64
    assert again.metadata["weights_sha256"] == lite0.metadata["weights_sha256"]


def test_class_names_and_synonyms_resolve(lite0) -> None:
    assert resolve_class(lite0, "Tabby Cat") == 281
    assert resolve_class(lite0, "tabby") == 281  # a WordNet synonym
    assert resolve_class(lite0, "golden_retriever") == 207
    assert resolve_class(lite0, "Granny Smith") == 948
    assert resolve_class(lite0, "417") == 417
    assert resolve_class(lite0, 817) == 817


def test_unknown_builtin_lists_the_builtins() -> None:
    with pytest.raises(ModelNotFound, match="efficientnet_lite0"):
        load_model("builtin:resnet9000")
    assert builtin_models() == ["efficientnet_lite0"]
