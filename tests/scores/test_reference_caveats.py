"""Reference-set caveats: found once with the statistics, kept on disk, carried by the scores.

Real PNG files written here, a small real (untrained) CNN made here: the caveats are
about the images as the model receives them, not about what the model learned.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image
from protolens_server.engine import (
    Caveat,
    GenerationConfig,
    InputSpec,
    Prototype,
    PrototypeScores,
    ReferenceStats,
    Target,
    score,
)
from protolens_server.models._digest import model_digest, state_dict_sha256
from protolens_server.models.handle import ModelHandle
from protolens_server.scores import cache
from protolens_server.scores.references import POLICY, ReferenceSet
from protolens_server.scores.scoring import score_prototypes, stored_image
from protolens_server.scores.statistics import reference_statistics
from scores_synthetic import make_dataset
from torch import nn

CLASSES = ("disc", "square", "ring")
SIZE = 32


class Tiny(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, 8, 3, 2, 1)
        self.conv2 = nn.Conv2d(8, 16, 3, 2, 1)
        self.head = nn.Linear(16, len(CLASSES))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv2(torch.relu(self.conv1(x))))
        return self.head(x.mean(dim=(2, 3)))


def tiny_handle(channels: int = 3) -> ModelHandle:
    torch.manual_seed(channels)
    net = Tiny(channels).eval().requires_grad_(False)
    spec = InputSpec(channels, SIZE, SIZE, mean=(0.5,) * channels, std=(0.25,) * channels)
    return ModelHandle(
        name="tiny",
        source="test:tiny",
        module=net,
        input_spec=spec,
        class_names=CLASSES,
        digest=model_digest(state_dict_sha256(net.state_dict(), "tiny"), spec),
    )


def save(image: torch.Tensor, path: Path, *, grey: bool = False, mode: str = "RGB") -> None:
    """A (3, H, W) image as a PNG: ``grey`` keeps only its luminance, stored as one
    channel (``mode`` "L") or as three equal ones ("RGB")."""
    path.parent.mkdir(parents=True, exist_ok=True)
    array = (image.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
    im = Image.fromarray(array)
    if grey:
        im = im.convert("L").convert(mode)
    im.save(path)


def write_set(root: Path, *, grey: tuple[int, ...] = (), per_class: int = 6) -> Path:
    images, labels = make_dataset(per_class, seed=7, classes=len(CLASSES))
    for i, (image, label) in enumerate(zip(images, labels, strict=True)):
        c = int(label)
        # the grey class mixes both ways of storing grey: one channel, three equal ones
        save(image, root / str(c) / f"{i:02d}.png", grey=c in grey, mode="L" if i % 2 else "RGB")
    return root


def prototypes(classes: tuple[int, ...]) -> list[Prototype]:
    g = torch.Generator().manual_seed(3)
    return [
        Prototype(
            target=Target((c,)),
            index=0,
            probability=0.0,
            logit=0.0,
            top5=[],
            steps=0,
            seed=0,
            image=torch.rand(3, SIZE, SIZE, generator=g),
            config=GenerationConfig(),
        )
        for c in classes
    ]


def codes(caveats: list[Caveat] | tuple[Caveat, ...]) -> list[tuple[str, tuple[int, ...]]]:
    return [(c.code, c.classes) for c in caveats]


def test_an_all_grey_class_among_colour_ones_is_named_for_that_class_only(tmp_path):
    handle = tiny_handle(3)
    root = write_set(tmp_path / "refs", grey=(2,))
    stats = reference_statistics(
        handle, ReferenceSet.from_folder(root, CLASSES), cache_dir=tmp_path
    )
    assert codes(stats.caveats) == [("GREYSCALE_CLASS", (2,))]
    (caveat,) = stats.caveats
    assert "class 2 (folder 2/)" in caveat.message and "add colour photos" in caveat.message
    assert caveat.files == tuple(sorted(f"2/{p.name}" for p in (root / "2").glob("*.png")))

    scores = score_prototypes(
        handle, prototypes((0, 2)), root, robustness_samples=0, cache_dir=tmp_path
    )
    assert scores[0].caveats == [] and scores[0].to_dict()["caveats"] == []
    assert codes(scores[1].caveats) == [("GREYSCALE_CLASS", (2,))]
    assert scores[1].to_dict()["caveats"] == [caveat.to_dict()]
    # a hybrid of a colour class and the grey class rests on the grey one too
    hybrid = dataclasses.replace(prototypes((0,))[0], target=Target((0, 2), "hybrid"))
    (mixed,) = score_prototypes(handle, [hybrid], root, robustness_samples=0, cache_dir=tmp_path)
    assert codes(mixed.caveats) == [("GREYSCALE_CLASS", (2,))]


def test_caveats_are_words_beside_unchanged_numbers(tmp_path):
    handle = tiny_handle(3)
    root = write_set(tmp_path / "refs", grey=(2,))
    stats = reference_statistics(
        handle, ReferenceSet.from_folder(root, CLASSES), cache_dir=tmp_path
    )
    as_stored = [dataclasses.replace(p, image=stored_image(p.image)) for p in prototypes((2,))]
    (with_caveat,) = score(handle, as_stored, stats, robustness_samples=0)
    bare = dataclasses.replace(stats, caveats=())
    (without,) = score(handle, as_stored, bare, robustness_samples=0)
    a, b = with_caveat.to_dict(), without.to_dict()
    assert a.pop("caveats") and b.pop("caveats") == []
    assert a == b


def test_no_greyscale_caveat_for_a_one_channel_model_or_an_all_grey_set(tmp_path):
    root = write_set(tmp_path / "refs", grey=(2,))
    one_channel = reference_statistics(
        tiny_handle(1), ReferenceSet.from_folder(root, CLASSES), cache_dir=tmp_path
    )
    assert one_channel.caveats == ()
    all_grey = write_set(tmp_path / "grey", grey=(0, 1, 2))
    stats = reference_statistics(
        tiny_handle(3), ReferenceSet.from_folder(all_grey, CLASSES), cache_dir=tmp_path
    )
    assert stats.caveats == ()  # nothing is compared with colour
    colour = write_set(tmp_path / "colour")
    stats = reference_statistics(
        tiny_handle(3), ReferenceSet.from_folder(colour, CLASSES), cache_dir=tmp_path
    )
    assert stats.caveats == ()


def test_duplicates_are_named_by_their_paths_in_the_set(tmp_path):
    root = write_set(tmp_path / "refs")
    shutil.copy(root / "1" / "01.png", root / "1" / "copy-of-01.png")  # byte-identical
    with Image.open(root / "1" / "04.png") as im:  # the same pixels, other bytes
        im.save(root / "1" / "04-again.png", compress_level=0)
    assert (root / "1" / "04.png").read_bytes() != (root / "1" / "04-again.png").read_bytes()
    shutil.copy(root / "0" / "00.png", root / "2" / "from-class-0.png")  # another class: fine
    stats = reference_statistics(
        tiny_handle(3), ReferenceSet.from_folder(root, CLASSES), cache_dir=tmp_path
    )
    assert codes(stats.caveats) == [("DUPLICATE_IMAGES", (1,))]
    (caveat,) = stats.caveats
    assert caveat.files == ("1/01.png", "1/copy-of-01.png", "1/04-again.png", "1/04.png")
    assert "1/01.png = 1/copy-of-01.png; 1/04-again.png = 1/04.png" in caveat.message
    assert "remove 2 copy(ies)" in caveat.message


def test_caveats_survive_the_disk_cache(tmp_path):
    handle = tiny_handle(3)
    root = write_set(tmp_path / "refs", grey=(2,))
    shutil.copy(root / "0" / "00.png", root / "0" / "again.png")
    refset = ReferenceSet.from_folder(root, CLASSES)
    first = reference_statistics(handle, refset, cache_dir=tmp_path)
    assert codes(first.caveats) == [("DUPLICATE_IMAGES", (0,)), ("GREYSCALE_CLASS", (2,))]

    cache.MEMORY_CACHE.clear()  # as a fresh process finds it: only the file
    calls: list[int] = []
    hook = handle.module.register_forward_pre_hook(lambda _m, a: calls.append(a[0].shape[0]))
    try:
        again = reference_statistics(handle, refset, cache_dir=tmp_path)
    finally:
        hook.remove()
    assert calls == [] and again is not first  # read from disk, no image loaded
    assert again.caveats == first.caveats
    (scored,) = score_prototypes(
        handle, prototypes((2,)), root, robustness_samples=0, cache_dir=tmp_path
    )
    assert codes(scored.caveats) == [("GREYSCALE_CLASS", (2,))]


def test_a_statistics_file_from_before_caveats_is_recomputed(tmp_path):
    """Its version differs: never read as 'no caveats'."""
    handle = tiny_handle(3)
    root = write_set(tmp_path / "refs", grey=(2,))
    refset = ReferenceSet.from_folder(root, CLASSES)
    stats = reference_statistics(handle, refset, cache_dir=tmp_path)
    (path,) = tmp_path.glob("*.pt")
    old = stats.to_state()
    del old["caveats"]
    old["version"] = 2
    torch.save(old, path)
    assert cache.read_stats(path) is None  # recomputed, then overwritten
    assert ReferenceStats.from_state(old).caveats == ()  # and readable, were it asked
    cache.MEMORY_CACHE.clear()
    again = reference_statistics(handle, refset, cache_dir=tmp_path)
    assert codes(again.caveats) == [("GREYSCALE_CLASS", (2,))]
    assert torch.load(path, weights_only=True)["caveats"] == [c.to_dict() for c in again.caveats]
    key = cache.stats_key(
        handle.digest, stats.layers, refset.digest, handle.input_spec,
        policy=POLICY, resamples=200, seed=0,
    )  # fmt: skip
    assert path.stem == key


def test_caveats_read_back_from_a_scores_dict(tmp_path):
    root = write_set(tmp_path / "refs", grey=(2,))
    (s,) = score_prototypes(
        tiny_handle(3), prototypes((2,)), root, robustness_samples=0, cache_dir=tmp_path
    )
    back = PrototypeScores.from_dict(s.to_dict())
    assert back.caveats == s.caveats
    old = s.to_dict()
    del old["caveats"]
    assert PrototypeScores.from_dict(old).caveats == []


def test_the_projects_own_evaluation_set_names_its_greyscale_camera_class(tmp_path):
    """The case that found the need (docs/scores.md, the diagnosis): scikit-image's
    cameraman is the camera class's only photo, and it is grey; and every class is crops
    of one photo."""
    pytest.importorskip("skimage")
    from protolens_server.engine import reference_caveats
    from protolens_server.scores.references import load_images
    from protolens_server.scores.samples import SKIMAGE_CLASSES, write_reference_set

    root = write_reference_set(tmp_path / "photos", per_class=4)
    refset = ReferenceSet.from_folder(root, [str(i) for i in range(1000)])
    images, labels = load_images(refset, InputSpec(3, 224, 224))
    caveats = reference_caveats(images, labels, [im.relative for im in refset.images])
    camera = SKIMAGE_CLASSES["camera"]
    assert [c for c in codes(caveats) if c[0] != "NEAR_DUPLICATE_IMAGES"] == [
        ("GREYSCALE_CLASS", (camera,))
    ]
    near = {c.classes[0]: c for c in caveats if c.code == "NEAR_DUPLICATE_IMAGES"}
    assert set(near) == set(SKIMAGE_CLASSES.values())
    for name, cls in SKIMAGE_CLASSES.items():
        assert all(f.startswith(f"{cls}/{name}-") for f in near[cls].files)
