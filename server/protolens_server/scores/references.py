"""Reference sets: natural images per class, their content digest, and how they are loaded.

A reference set is either a folder ``ROOT/<class>/*.png|jpg|jpeg`` where
``<class>`` is a class index (``281``) or a class name the model knows
(``tabby``, ``tabby_cat``: matched as ``--target`` matches them), or
a list of ``(file, class)`` pairs.

Size: at least ``engine.MIN_CLASSES`` (2) classes with ``engine.MIN_IMAGES`` (3)
images each, or a ``ReferenceSetError`` (INVALID_ARGUMENT) that says what to add;
``engine.RECOMMENDED_CLASSES`` (5) classes with ``engine.RECOMMENDED_IMAGES`` (20)
images each give intervals narrow enough to read (docs/scores.md).

Image policy (one rule, so statistics are comparable across sets): each image
is converted to the model's channel count (RGB or greyscale; alpha dropped),
scaled with bicubic resampling so it just covers the model's input size
(aspect ratio kept), then centre-cropped to exactly that size. Images are
never enlarged: one smaller than the input in either direction would be blurry
and would drag the "natural" level down, so it is refused with an error naming
the file. Values are in [0, 1]; the model's own normalisation is applied later.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError

from protolens_server.engine import MIN_IMAGES, SIZE_ADVICE, InputSpec, check_reference_counts
from protolens_server.errors import ReferenceSetError, UnknownClass
from protolens_server.imageio import MAX_IMAGE_PIXELS, upright
from protolens_server.models.classes import resolve_class
from protolens_server.scores.cache import Lru
from protolens_server.scores.naming import IMAGE_SUFFIXES, class_folders

POLICY = "cover-bicubic-centre-crop-no-upscale/v1"  # part of every cache key


@dataclass(frozen=True)
class ReferenceImage:
    path: Path
    class_index: int
    relative: str  # the name the digest uses (path relative to the root, or as given)


@dataclass(frozen=True)
class ReferenceSet:
    """Natural images with their class indices. Build with ``from_folder`` or ``from_pairs``."""

    images: tuple[ReferenceImage, ...]
    root: Path | None = None
    _digest: list[str] = field(default_factory=list, compare=False, repr=False)

    @property
    def classes(self) -> tuple[int, ...]:
        return tuple(sorted({im.class_index for im in self.images}))

    def __len__(self) -> int:
        return len(self.images)

    @property
    def digest(self) -> str:
        """sha256 over the sorted (class, relative path, file bytes) of every image.

        Memoised per process by each file's (path, size, mtime), so a worker that
        scores job after job against the same folder reads its bytes once.
        """
        if not self._digest:
            ordered = sorted(self.images, key=lambda i: (i.relative, i.class_index))
            signature = tuple((im.class_index, im.relative, *_stat(im.path)) for im in ordered)
            known = _DIGESTS.get(signature)
            self._digest.append(known or _content_digest(ordered))
            if known is None:
                _DIGESTS.put(signature, self._digest[0])
        return self._digest[0]

    def reindexed(self, index_of: Mapping[int, int]) -> ReferenceSet:
        """The same images under other class indices (``index_of``: this set's index -> the
        new one; classes not in it are left out): another version's view of the same
        classes when its labels moved (``checks/matching.py``)."""
        images = tuple(
            ReferenceImage(im.path, index_of[im.class_index], im.relative)
            for im in self.images
            if im.class_index in index_of
        )
        return ReferenceSet(images, self.root)

    def require(self, classes: Iterable[int], class_names: Sequence[str] = ()) -> None:
        """Raise a ReferenceSetError naming the first class with no images here."""
        have = set(self.classes)
        for c in classes:
            if c in have:
                continue
            name = f" ({class_names[c]})" if 0 <= c < len(class_names) else ""
            where = f"folder {self.root}" if self.root else "reference list"
            fix = f"add {self.root}/{c}/ with" if self.root else "add"
            raise ReferenceSetError(
                "reference",
                f"the {where} has no images of class {c}{name}; {fix} natural images of that class",
                missing_class=str(c),
            )

    def check_usable(self) -> None:
        """At least ``MIN_CLASSES`` classes with ``MIN_IMAGES`` images each, or an error
        that names the folder (or file) to add images to."""
        per_class = {c: sum(im.class_index == c for im in self.images) for c in self.classes}
        for c, n in per_class.items():
            if n < MIN_IMAGES:
                first = next(im for im in self.images if im.class_index == c)
                place = first.path.parent if self.root else first.path
                raise ReferenceSetError(
                    "reference",
                    f"{place}: class {c} has only {n} image(s); add at least {MIN_IMAGES - n} "
                    f"more; {SIZE_ADVICE}",
                    file=str(place),
                    missing_class=str(c),
                )
        check_reference_counts(
            per_class, f"the folder {self.root}" if self.root else "the reference list"
        )

    @classmethod
    def from_folder(
        cls,
        root: str | Path,
        class_names: Sequence[str],
        class_aliases: Sequence[Sequence[str]] = (),
    ) -> ReferenceSet:
        root = Path(root)
        if not root.is_dir():
            raise ReferenceSetError(
                "reference", f"{root} is not a folder; give ROOT with one sub-folder per class"
            )
        known = _classes(class_names, class_aliases)
        images = []
        folders = class_folders(root)
        if not folders:
            raise ReferenceSetError(
                "reference", f"{root} has no class folders; expected ROOT/<class index or name>/"
            )
        for folder in folders:
            index = _class_index(folder.name, known, where=str(folder))
            files = sorted(
                p
                for p in folder.iterdir()
                if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
            )
            if not files:
                raise ReferenceSetError(
                    "reference",
                    f"class folder {folder} has no .png/.jpg/.jpeg images; add some or remove it",
                    file=str(folder),
                )
            images += [ReferenceImage(f, index, f.relative_to(root).as_posix()) for f in files]
        return cls(tuple(images), root)

    @classmethod
    def from_pairs(
        cls,
        pairs: Iterable[tuple[str | Path, int | str]],
        class_names: Sequence[str],
        class_aliases: Sequence[Sequence[str]] = (),
    ) -> ReferenceSet:
        known = _classes(class_names, class_aliases)
        images = []
        for file, label in pairs:
            path = Path(file)
            if not path.is_file():
                raise ReferenceSetError(
                    "reference", f"{path} does not exist or is not a file", file=str(path)
                )
            index = _class_index(str(label), known, where=str(path))
            images.append(ReferenceImage(path, index, path.as_posix()))
        if not images:
            raise ReferenceSetError("reference", "the reference list is empty")
        return cls(tuple(images))


def _stat(path: Path) -> tuple[str, int, int]:
    try:
        st = path.stat()
    except OSError as e:
        raise ReferenceSetError(
            "reference", f"cannot read {path}: {e.strerror or e}", file=str(path)
        ) from e
    return str(path.resolve()), st.st_size, st.st_mtime_ns


def _content_digest(images: Sequence[ReferenceImage]) -> str:
    # v2: images are read upright (their EXIF orientation applied): the same bytes give
    # other statistics and scores than v1's, so they must not share a digest (it keys the
    # statistics cache and every scored job's result cache)
    h = hashlib.sha256(b"protolens-reference-set/v2\0")
    for im in images:
        h.update(f"{im.class_index}\0{im.relative}\0".encode())
        try:
            data = im.path.read_bytes()
        except OSError as e:
            raise ReferenceSetError(
                "reference", f"cannot read {im.path}: {e.strerror or e}", file=str(im.path)
            ) from e
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()


_DIGESTS = Lru(64)


@dataclass(frozen=True)
class _Classes:
    class_names: tuple[str, ...]
    class_aliases: tuple[tuple[str, ...], ...]


def _classes(class_names: Sequence[str], class_aliases: Sequence[Sequence[str]]) -> _Classes:
    return _Classes(tuple(class_names), tuple(tuple(a) for a in class_aliases))


def _class_index(label: str, classes: _Classes, *, where: str) -> int:
    """A folder or list label as a class index, by the same rules as ``--target``."""
    try:
        return resolve_class(classes, label, field="reference")
    except UnknownClass as e:
        detail = e.message.partition(": ")[2] or e.message
        raise ReferenceSetError(
            "reference",
            f"{where}: {detail}; name class folders by index (0..{len(classes.class_names) - 1})"
            " or by one of the model's class names",
            file=where,
        ) from e


def load_image(path: Path, spec: InputSpec) -> torch.Tensor:
    """One image as (C, H, W) float32 in [0, 1], by the module's policy (see docstring).

    An image of more than ``imageio.MAX_IMAGE_PIXELS`` is refused from its header, before
    it is decoded: the limit of a photo sent to the API (PIL's own is 4.5 times higher).
    """
    try:
        with Image.open(path) as im:
            w, h = im.size
            if w * h > MAX_IMAGE_PIXELS:
                raise ReferenceSetError(
                    "reference",
                    f"image {path} is {w}x{h} pixels; at most {MAX_IMAGE_PIXELS:,} are read:"
                    " scale it down (a few hundred pixels a side is plenty)",
                    file=str(path),
                )
            im.load()
            img = upright(im).convert("L" if spec.channels == 1 else "RGB")
    except Image.DecompressionBombError as e:
        raise ReferenceSetError(
            "reference",
            f"image {path} declares over {MAX_IMAGE_PIXELS:,} pixels: scale it down",
            file=str(path),
        ) from e
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise ReferenceSetError(
            "reference", f"cannot read image {path}: {e}; replace or remove it", file=str(path)
        ) from e
    if spec.channels not in (1, 3):
        raise ReferenceSetError(
            "reference", f"the model wants {spec.channels} channels; only 1 or 3 can be loaded"
        )
    w, h = img.size
    if w < spec.width or h < spec.height:
        raise ReferenceSetError(
            "reference",
            f"image {path} is {w}x{h} px, smaller than the model's input {spec.width}x"
            f"{spec.height}; use an image at least that large (images are never enlarged)",
            file=str(path),
        )
    scale = max(spec.width / w, spec.height / h)
    size = (max(spec.width, round(w * scale)), max(spec.height, round(h * scale)))
    img = img.resize(size, Image.Resampling.BICUBIC)
    left, top = (size[0] - spec.width) // 2, (size[1] - spec.height) // 2
    img = img.crop((left, top, left + spec.width, top + spec.height))
    data = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8)
    return data.view(spec.height, spec.width, spec.channels).permute(2, 0, 1).float() / 255.0


def load_images(refset: ReferenceSet, spec: InputSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """All images (N, C, H, W) in [0, 1] and their class indices (N,)."""
    if not refset.images:
        raise ReferenceSetError("reference", "the reference set has no images")
    images = torch.stack([load_image(im.path, spec) for im in refset.images])
    labels = torch.tensor([im.class_index for im in refset.images], dtype=torch.long)
    return images, labels
