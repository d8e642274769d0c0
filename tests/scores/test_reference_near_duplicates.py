"""NEAR_DUPLICATE_IMAGES: a class whose reference images are crops, rescaled or mirrored
copies of one photo is named, with its files; photos of different subjects are not.

Real photos (scikit-image's samples), real PNG files, the real loader and statistics: the
caveat is about the images as the model receives them.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from protolens_server.engine import InputSpec, near_duplicate_groups, reference_caveats
from protolens_server.scores.references import ReferenceSet, load_images
from protolens_server.scores.samples import crops, photo
from protolens_server.scores.statistics import reference_statistics
from test_reference_caveats import CLASSES, codes, tiny_handle

# one photo each: different subjects, colour and grey, smooth and textured
OTHERS = ("astronaut", "coffee", "chelsea", "rocket", "camera", "hubble_deep_field", "grass")


def _photo_crops(name: str, n: int, seed: int, size: int = 160) -> list[Image.Image]:
    return crops(photo(name), n, size, np.random.default_rng(seed))


def _write(root: Path, images: dict[str, list[Image.Image]]) -> Path:
    """``root/<class>/<photo>-NN.png``; ``images`` maps a class folder to its images."""
    for cls, ims in images.items():
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i, im in enumerate(ims):
            im.save(root / cls / f"{i:02d}.png")
    return root


def _one_crop_each(names: tuple[str, ...], seed: int = 0) -> list[Image.Image]:
    return [_photo_crops(name, 1, seed + k)[0] for k, name in enumerate(names)]


def test_crops_of_one_photo_are_named_and_photos_of_other_subjects_are_not(tmp_path):
    root = _write(
        tmp_path / "refs",
        {
            "0": _photo_crops("coffee", 5, seed=1),  # five views of one photo
            "1": _one_crop_each(OTHERS[2:]),  # five photos
            "2": _one_crop_each(OTHERS[:2]) + _photo_crops("rocket", 3, seed=2),  # 2 + 3 views
        },
    )
    refset = ReferenceSet.from_folder(root, [str(i) for i in range(3)])
    images, labels = load_images(refset, InputSpec(3, 160, 160))
    caveats = reference_caveats(images, labels, [im.relative for im in refset.images])
    assert codes(caveats) == [("NEAR_DUPLICATE_IMAGES", (0,)), ("NEAR_DUPLICATE_IMAGES", (2,))]
    whole, part = caveats
    assert whole.files == tuple(f"0/{i:02d}.png" for i in range(5))
    assert "5 of its 5 images are views of 1 photo" in whole.message
    assert "use photos taken separately" in whole.message
    assert part.files == ("2/02.png", "2/03.png", "2/04.png")  # the rocket's views only
    assert "3 of its 5 images are views of 1 photo" in part.message


def test_a_mirrored_and_rescaled_copy_is_a_view_of_the_same_photo(tmp_path):
    source = _photo_crops("chelsea", 1, seed=3, size=300)[0]
    mirrored = source.transpose(Image.Transpose.FLIP_LEFT_RIGHT).resize((220, 220))
    inner = source.crop((40, 30, 250, 240))  # a crop of it, rescaled by the loader
    others = _one_crop_each(("astronaut", "rocket", "grass"))
    groups = near_duplicate_groups(_tensors([source, mirrored, inner, *others]))
    assert groups == [[0, 1, 2]]


def test_identical_copies_are_duplicates_not_near_duplicates(tmp_path):
    photos = {"0": _one_crop_each(OTHERS[:4]), "1": _one_crop_each(OTHERS[3:])}
    root = _write(tmp_path / "refs", photos)
    shutil.copy(root / "0" / "01.png", root / "0" / "copy.png")
    refset = ReferenceSet.from_folder(root, ["0", "1"])
    images, labels = load_images(refset, InputSpec(3, 160, 160))
    caveats = reference_caveats(images, labels, [im.relative for im in refset.images])
    assert codes(caveats) == [("DUPLICATE_IMAGES", (0,))]


def test_the_same_set_gives_the_same_groups_every_time():
    images = _tensors(_photo_crops("rocket", 4, seed=5) + _one_crop_each(("coffee", "grass")))
    first = near_duplicate_groups(images)
    assert first and first == near_duplicate_groups(images)


@pytest.mark.parametrize("size", [32, 64])
def test_small_model_inputs_still_find_crops_of_one_photo(size):
    images = _tensors(_photo_crops("astronaut", 4, seed=6), size=size)
    others = _tensors(_one_crop_each(("coffee", "rocket", "grass", "hubble_deep_field")), size=size)
    assert near_duplicate_groups(images) != []
    assert near_duplicate_groups(others) == []


def test_the_caveat_is_kept_with_the_statistics_of_a_32_px_model(tmp_path):
    root = _write(
        tmp_path / "refs",
        {"0": _photo_crops("astronaut", 4, seed=1), "1": _one_crop_each(OTHERS[1:5])},
    )
    refset = ReferenceSet.from_folder(root, CLASSES)
    stats = reference_statistics(tiny_handle(3), refset, cache_dir=tmp_path)
    assert codes(stats.caveats) == [("NEAR_DUPLICATE_IMAGES", (0,))]


def _tensors(images: list[Image.Image], size: int = 160) -> torch.Tensor:
    out = []
    for im in images:
        a = np.asarray(im.convert("RGB").resize((size, size), Image.BICUBIC), dtype=np.float32)
        out.append(torch.from_numpy(a / 255).permute(2, 0, 1))
    return torch.stack(out)


def test_flat_tiny_odd_shaped_and_many_channel_images_are_no_error():
    assert near_duplicate_groups(torch.zeros(3, 3, 32, 32)) == []  # no keypoint at all
    assert near_duplicate_groups(torch.rand(3, 3, 4, 4)) == []
    assert near_duplicate_groups(torch.rand(3, 1, 8, 300)) == []
    assert near_duplicate_groups(torch.rand(2, 5, 64, 64)) == []  # 5 channels: their mean
    noise = torch.rand(1, 3, 64, 64)
    assert near_duplicate_groups(torch.cat([noise, noise])) == [[0, 1]]


def test_aligned_faces_of_different_photos_are_not_views_of_one() -> None:
    """LFW's faces are aligned (eyes and mouth in the same places), so keypoints of two
    people's faces can agree on one transform: these five pairs had 8 or more agreeing
    matches (bench/near_duplicates.py). They share structure, not pixels; a crop of one
    of them is still found."""
    from protolens_server.engine import content_keypoints, shares_content
    from skimage import data

    faces = data.lfw_subset()

    def as_model_input(face: np.ndarray) -> torch.Tensor:
        im = Image.fromarray((face * 255).astype(np.uint8)).resize((224, 224), Image.BICUBIC)
        return torch.from_numpy(np.asarray(im.convert("RGB"), np.float32) / 255).permute(2, 0, 1)

    for i, j in ((3, 73), (3, 80), (55, 73), (60, 71), (91, 93)):
        a, b = as_model_input(faces[i]), as_model_input(faces[j])
        ka = content_keypoints(a)
        assert not shares_content(ka, content_keypoints(b)), (i, j)
        assert not shares_content(ka, content_keypoints(b, mirror=True)), (i, j)
    whole = as_model_input(faces[3])
    part = torch.nn.functional.interpolate(
        whole[None, :, 20:200, 30:210], size=(224, 224), mode="bilinear", align_corners=False
    )[0]
    assert shares_content(content_keypoints(whole), content_keypoints(part))
