"""A version retrained at another input size, or in grey where the other is in colour, is
checked: each version's prototypes are shown to the other as it would see any image
(``checks/comparison.py``: resized, made grey or repeated). Before, such a check generated
every prototype and then stopped with a RuntimeError from ``torch.cat`` (sizes of tensors
must match). Channel counts with no such reading are refused before anything is made."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from checks_shortcut_models import CONFIG
from protolens_server.checks import comparison, run_check
from protolens_server.checks.policy import Policy
from protolens_server.errors import InvalidArgument
from protolens_server.models.handle import ModelHandle
from torch import nn


def seen_through(net: object, size: int | None = None, grey: bool = False) -> nn.Module:
    """``net`` behind an input of another size (resized to ``net``'s) or one grey channel
    (repeated to three): the same classifier with another input."""

    class Input(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if grey:
                x = x.expand(-1, 3, -1, -1)
            if size is not None:
                x = nn.functional.interpolate(x, size=(size, size), mode="bilinear")
            return self.net(x)

    wrapper = Input()
    wrapper.training = False  # not .eval(): an exported program's module refuses train()
    return wrapper


def another_input(clean: ModelHandle, name: str, module: nn.Module, **spec: object) -> ModelHandle:
    """``clean`` behind ``module``, with its input spec changed by ``spec``."""
    return dataclasses.replace(
        clean,
        name=name,
        module=module,
        input_spec=dataclasses.replace(clean.input_spec, **spec),
        digest=f"{name}-{clean.digest}",
    )


def test_a_version_at_another_input_size_is_compared(catalog, tmp_path) -> None:
    clean: ModelHandle = catalog.load("shapes@1")
    size = clean.input_spec.height
    larger = another_input(
        clean, "shapes-48", seen_through(clean.module, size), height=48, width=48
    )
    doc = run_check(
        larger, baseline=clean, config=CONFIG, policy=Policy.load("default"), cache_dir=tmp_path
    ).to_dict()
    assert "min_cross_confidence" not in doc["failed_rules"], doc["rules"]
    for c in doc["classes"]:
        assert c["new"] and c["baseline"] and c["drift"] is not None
        # the same classifier: each version recognises the other's prototype of the class
        assert c["cross_scores"]["new_prototype_in_baseline_model"] > 0.5, c
        assert c["cross_scores"]["baseline_prototype_in_new_model"] > 0.5, c


def test_a_grey_version_is_compared_and_other_channel_counts_are_refused(catalog, tmp_path) -> None:
    clean: ModelHandle = catalog.load("shapes@1")
    spec = clean.input_spec
    grey = another_input(
        clean,
        "shapes-grey",
        seen_through(clean.module, grey=True),
        channels=1,
        mean=spec.mean[:1],
        std=spec.std[:1],
    )
    doc = run_check(
        grey, baseline=clean, config=CONFIG, policy=Policy.load("default"), cache_dir=tmp_path
    ).to_dict()
    for c in doc["classes"]:
        assert c["cross_scores"]["new_prototype_in_baseline_model"] is not None
        assert c["cross_scores"]["baseline_prototype_in_new_model"] is not None
    rgba = dataclasses.replace(
        clean,
        input_spec=dataclasses.replace(spec, channels=4, mean=spec.mean[:1], std=spec.std[:1]),
        digest=f"rgba-{clean.digest}",
    )
    with pytest.raises(InvalidArgument, match="takes 3-channel images and the model 4-channel"):
        run_check(rgba, baseline=clean, config=CONFIG, cache_dir=tmp_path / "never")
    assert not (tmp_path / "never").exists()  # refused before anything was generated


def test_fitted_resizes_and_converts_channels() -> None:
    colour = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    grey = comparison.fitted(colour, (1, 16, 16))
    assert grey.shape == (2, 1, 16, 16) and grey.min() >= 0 and grey.max() <= 1
    luma = (colour * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
    torch.testing.assert_close(comparison.fitted(colour, (1, 8, 8)), luma)
    again = comparison.fitted(luma, (3, 8, 8))
    assert again.shape == (2, 3, 8, 8) and torch.equal(again[:, 0], again[:, 2])
    assert comparison.fitted(colour, (3, 8, 8)) is colour
    assert not comparison.fittable(4, 3) and comparison.fittable(1, 3)
