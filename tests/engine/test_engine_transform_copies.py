"""``transform_copies``: each step's loss is the mean over K independently transformed
copies of every image (a transform ensemble), deterministic and batch independent."""

from __future__ import annotations

import pytest
import torch
from engine_nets import FAST
from protolens_server.engine import Classifier, GenerationConfig, generate
from protolens_server.errors import InvalidArgument


def test_without_transforms_copies_are_one_image_and_change_nothing(tiny: Classifier) -> None:
    # no random transform: every copy is the same image, so the mean loss and its
    # gradient are the single copy's (up to float rounding)
    config = FAST.replace(transforms="none", steps=12)
    one = generate(tiny, [3], config, seed=5)[0]
    three = generate(tiny, [3], config.replace(transform_copies=3), seed=5)[0]
    torch.testing.assert_close(three.image, one.image, atol=1e-5, rtol=0)


def test_copies_draw_their_own_transforms_deterministically(tiny: Classifier) -> None:
    config = FAST.replace(steps=12, transforms="medium", transform_copies=2)
    first = generate(tiny, [3, 5], config, seed=5)
    again = generate(tiny, [3, 5], config, seed=5)
    alone = generate(tiny, [5], config, seed=5)[0]
    single = generate(tiny, [3, 5], config.replace(transform_copies=1), seed=5)
    for a, b in zip(first, again, strict=True):
        assert torch.equal(a.image, b.image)
    assert torch.allclose(first[1].image, alone.image, atol=1e-5)  # batch independent
    assert (first[0].image - single[0].image).abs().max() > 1e-3  # the copies differ
    assert first[0].config.transform_copies == 2


@pytest.mark.parametrize("copies", [0, 17])
def test_copies_out_of_range_are_refused(copies: int) -> None:
    with pytest.raises(InvalidArgument, match="transform_copies"):
        GenerationConfig(transform_copies=copies)
