"""Bad reference sets get a ReferenceSetError that names the file or folder and the fix."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from protolens_server.engine import GenerationConfig, generate
from protolens_server.errors import ReferenceSetError
from protolens_server.scores.references import ReferenceSet
from protolens_server.scores.scoring import score_prototypes
from protolens_server.scores.statistics import reference_statistics
from scores_synthetic import write_png


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_missing_class_names_the_class_and_folder(handle, reference_folder, tmp_path):
    root = _copy(reference_folder, tmp_path / "refs")
    shutil.rmtree(root / "3")
    (proto,) = generate(handle, [3], GenerationConfig(steps=4, equidistant_steps=0), seed=0)
    with pytest.raises(ReferenceSetError) as err:
        score_prototypes(handle, [proto], root, cache_dir=tmp_path / "cache")
    message = str(err.value)
    assert "class 3 (horizontal stripes)" in message and str(root) in message
    assert err.value.reason == "BAD_REFERENCE_SET" and err.value.metadata["missing_class"] == "3"


def test_unreadable_image_is_named(handle, reference_folder, tmp_path):
    root = _copy(reference_folder, tmp_path / "refs")
    bad = root / "5" / "broken.png"
    bad.write_bytes(b"this is not a png")
    refset = ReferenceSet.from_folder(root, handle.class_names)
    with pytest.raises(ReferenceSetError) as err:
        reference_statistics(handle, refset, cache_dir=tmp_path / "cache")
    assert str(bad) in str(err.value) and "cannot read image" in str(err.value)
    assert err.value.metadata["file"] == str(bad)


def test_too_small_image_is_named_with_the_size_needed(handle, reference_folder, tmp_path):
    root = _copy(reference_folder, tmp_path / "refs")
    small = root / "7" / "small.png"
    write_png(torch.rand(3, 20, 40), small)
    refset = ReferenceSet.from_folder(root, handle.class_names)
    with pytest.raises(ReferenceSetError) as err:
        reference_statistics(handle, refset, cache_dir=tmp_path / "cache")
    message = str(err.value)
    assert str(small) in message and "40x20" in message and "32x32" in message


def test_larger_images_are_scaled_and_centre_cropped(handle, tmp_path):
    from protolens_server.scores.references import load_image

    wide = torch.zeros(3, 64, 128)
    wide[:, :, 32:96] = 1.0  # a white centre square on black
    write_png(wide, tmp_path / "wide.png")
    image = load_image(tmp_path / "wide.png", handle.input_spec)
    assert image.shape == (3, 32, 32)
    assert image[:, :, 2:30].min() > 0.9  # the centre crop is the white square


def test_unknown_class_folder_and_empty_folder(handle, reference_folder, tmp_path):
    root = _copy(reference_folder, tmp_path / "refs")
    (root / "zebra").mkdir()
    with pytest.raises(ReferenceSetError) as err:
        ReferenceSet.from_folder(root, handle.class_names)
    assert str(root / "zebra") in str(err.value) and "class" in str(err.value)
    shutil.rmtree(root / "zebra")
    (root / "1" / "notes.txt").write_text("not an image")
    (root / "9").mkdir(exist_ok=True)
    for f in (root / "9").iterdir():
        f.unlink()
    with pytest.raises(ReferenceSetError) as err:
        ReferenceSet.from_folder(root, handle.class_names)
    assert str(root / "9") in str(err.value) and "no .png/.jpg/.jpeg" in str(err.value)


def test_not_a_folder_and_out_of_range_index(handle, tmp_path):
    with pytest.raises(ReferenceSetError, match="is not a folder"):
        ReferenceSet.from_folder(tmp_path / "nothing", handle.class_names)
    (tmp_path / "refs" / "42").mkdir(parents=True)
    with pytest.raises(ReferenceSetError, match="out of range"):
        ReferenceSet.from_folder(tmp_path / "refs", handle.class_names)


def test_a_class_with_one_image_or_a_single_class_is_refused(handle, reference_folder, tmp_path):
    root = _copy(reference_folder, tmp_path / "refs")
    for extra in sorted((root / "1").glob("*.png"))[1:]:
        extra.unlink()
    refset = ReferenceSet.from_folder(root, handle.class_names)
    with pytest.raises(ReferenceSetError, match="class 1 has only 1 image") as err:
        reference_statistics(handle, refset, cache_dir=tmp_path / "cache")
    assert str(root / "1") in str(err.value)
    only = tmp_path / "only"
    shutil.copytree(reference_folder / "3", only / "3")
    with pytest.raises(ReferenceSetError, match="add another class"):
        reference_statistics(
            handle, ReferenceSet.from_folder(only, handle.class_names), cache_dir=tmp_path / "c"
        )


def test_an_unknown_set_in_an_empty_root_says_what_a_set_is(tmp_path):
    """`protolens up --reference-root refsets/` then `submit --reference-set photos` (the
    README's step) answered '(available: none registered)', which says nothing of how to
    register one."""
    from protolens_server.scores.naming import registered_path

    (tmp_path / "notes.txt").write_text("not a set")
    with pytest.raises(ReferenceSetError) as err:
        registered_path(tmp_path, "photos")
    message = str(err.value)
    assert "unknown reference set 'photos'" in message
    assert "a set is a folder NAME in the server's reference root" in message
    assert "one folder of natural images per class" in message
    assert str(tmp_path) not in message  # callers never see the server's paths
