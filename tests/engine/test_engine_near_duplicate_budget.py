"""The near-duplicate search's bounded cost: how many images of a class it compares, that a
large set says how many it compared, and that a second model of the same input size reuses
the groups (private pieces: no public verb exposes them)."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from protolens_server.engine import _caveats, _near_duplicates
from protolens_server.scores.samples import crops, photo


def _views(name: str, n: int, seed: int, size: int = 96) -> list[torch.Tensor]:
    out = []
    for im in crops(photo(name), n, 224, np.random.default_rng(seed)):
        a = np.asarray(im.convert("RGB").resize((size, size), Image.BICUBIC), dtype=np.float32)
        out.append(torch.from_numpy(a / 255).permute(2, 0, 1))
    return out


def test_every_image_of_a_small_set_is_compared_and_a_large_set_shares_a_budget() -> None:
    assert _caveats._near_duplicates_checked(12, 4) == 12
    assert _caveats._near_duplicates_checked(200, 2) == _caveats.NEAR_DUPLICATES_PER_CLASS
    per_class = _caveats.NEAR_DUPLICATES_PER_SET // 100
    assert _caveats._near_duplicates_checked(50, 100) == per_class
    assert _caveats._near_duplicates_checked(50, 10_000) == _caveats.NEAR_DUPLICATES_MIN
    assert _caveats._near_duplicates_checked(2, 10_000) == 2


def test_a_class_compared_in_part_says_so(monkeypatch) -> None:
    monkeypatch.setattr(_caveats, "NEAR_DUPLICATES_PER_CLASS", 4)
    images = torch.stack(_views("astronaut", 6, seed=1) + _views("chelsea", 4, seed=2))
    labels = [0] * 6 + [1] * 4
    files = [f"{c}/{i:02d}.png" for i, c in enumerate(labels)]
    caveats = _caveats.reference_caveats(images, labels, files)
    near = [c for c in caveats if c.code == "NEAR_DUPLICATE_IMAGES"]
    assert [c.classes for c in near] == [(0,), (1,)]
    assert "4 images compared (of 6)" in near[0].message
    assert set(near[0].files) <= {f"0/{i:02d}.png" for i in range(4)}  # the first four
    assert "of its 4 images are" in near[1].message


def test_the_same_images_reuse_their_groups(monkeypatch) -> None:
    images = torch.stack(_views("rocket", 3, seed=4))
    labels, files = [0, 0, 0], ["0/a.png", "0/b.png", "0/c.png"]
    calls: list[int] = []
    real = _near_duplicates.near_duplicate_groups

    def counted(x: torch.Tensor) -> list[list[int]]:
        calls.append(int(x.shape[0]))
        return real(x)

    monkeypatch.setattr(_caveats, "near_duplicate_groups", counted)
    _caveats._GROUPS_MEMO.clear()
    first = _caveats.reference_caveats(images, labels, files)
    again = _caveats.reference_caveats(images.clone(), labels, files)
    assert calls == [3] and first == again and first[0].code == "NEAR_DUPLICATE_IMAGES"


def test_the_sets_share_is_spent_in_class_order(monkeypatch) -> None:
    monkeypatch.setattr(_caveats, "NEAR_DUPLICATES_PER_SET", 8)  # two classes of four
    _caveats._GROUPS_MEMO.clear()
    images = torch.stack(
        _views("astronaut", 4, seed=1) + _views("chelsea", 4, seed=2) + _views("rocket", 4, seed=3)
    )
    labels = [0] * 4 + [1] * 4 + [2] * 4
    files = [f"{c}/{i:02d}.png" for i, c in enumerate(labels)]
    caveats = _caveats.reference_caveats(images, labels, files)
    assert [c.classes for c in caveats if c.code == "NEAR_DUPLICATE_IMAGES"] == [(0,), (1,)]
