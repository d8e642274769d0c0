"""Which reference images of a class show the same content: crops, rescaled or mirrored
copies of one photo.

A set built from a few photos by cropping and flipping (the project's own evaluation
set, the demo's) passes every check of ``references``: each class has enough images and
no two are identical. Its class means are still a few photos' texture and colour, and
the bootstrap draws each view as an independent image, so the intervals are narrower
than the evidence. ``DUPLICATE_IMAGES`` finds identical pixels only; this finds images
that share content under a change of scale, position and left-right mirroring.

How: scikit-image's ORB keypoints (FAST corners with binary descriptors, over a scale
pyramid; ``FAST_THRESHOLD`` low, so a smooth photo's faint corners count) of each image's
luminance at ``SIDE`` px, and of its mirror image; for each pair of a class's images,
descriptors matched both ways with a ratio test (``_matches``), then RANSAC fits a
similarity transform (scale and shift; crops are not rotated, so a fit turned by more
than ``MAX_ROTATION_DEG`` is no match). A pair shares content when at least
``MIN_INLIERS`` matches agree on one transform and the two images, aligned by it, show
the same pixels where they overlap (``_same_pixels``: aligned faces of different people
share structure, not pixels); groups are the connected pairs.

Measured on crops of 16 scikit-image photos (``bench/near_duplicates.py``): crops of
one photo that overlap by half or more are linked in 84 % of pairs, photos of different
subjects in none, nor any pair of 100 aligned faces (LFW); two crops of one photo that
share no pixels are not linked (nothing is shared), though they may join a group
through a third crop that overlaps both.
Repetitive texture (a brick wall) defeats the ratio test, so such crops may go unseen:
a caveat found is evidence, no caveat is not proof of independent photos.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from skimage.transform import SimilarityTransform

SIDE = 160  # px: the longer side the luminance is scaled to before keypoints
MIN_SIDE = 96  # px: a small input is enlarged to 2x its side, at least this (and at most SIDE)
KEYPOINTS = 300
FAST_THRESHOLD = 0.01  # corners of low contrast count too (a smooth colour wheel has few else)
MIN_INLIERS = 8  # photos of different subjects reached 3 (bench/near_duplicates.py)
RANSAC_TRIALS = 300
MAX_ROTATION_DEG = 10.0
RESIDUAL_PX = SIDE / 64  # a match within 2.5 px of the fitted transform is an inlier
MAX_RATIO = 0.8  # Lowe's ratio test on descriptor distances
# Views of one photo share their pixels, not only their structure: aligned by the fitted
# transform and blurred (BLUR_PX) against resampling, their luminance must correlate this
# well where they overlap. Measured (scratch, 2026-12-06): crops of one photo >= 0.94;
# aligned faces of different people that RANSAC linked <= 0.79, two photos of one person
# 0.84 (25-px LFW faces as a 224-px model receives them, where 5 of 4950 pairs had 8+
# agreeing matches).
MIN_CORRELATION = 0.9
BLUR_PX = 2.0
MIN_OVERLAP_PX = 1024  # fewer shared pixels than a 32 x 32 patch: too few to correlate


class Keypoints(NamedTuple):
    """ORB keypoints at ``SIDE`` px, their binary descriptors, and the luminance they
    were found on (blurred by ``BLUR_PX``, for the pixel check)."""

    points: np.ndarray  # (K, 2) row, column
    descriptors: np.ndarray  # (K, 256) bool
    grey: np.ndarray  # (h, w) float64


def content_keypoints(image: torch.Tensor, *, mirror: bool = False) -> Keypoints | None:
    """The keypoints that ``shares_content`` compares, of one ``(C, H, W)`` image in [0, 1]
    (``mirror``: of its left-right mirror image); None when it has fewer than three (a flat
    or tiny image shares nothing that can be shown)."""
    grey = _luminance(image)
    return _features(grey.flip(-1) if mirror else grey)


def near_duplicate_groups(images: torch.Tensor) -> list[list[int]]:
    """Groups (indices into ``images``, each of two or more, ascending) of images that share
    content. ``images``: ``(N, C, H, W)`` in [0, 1], one class's. Identical images are
    grouped too (they share everything); callers that report those on their own drop them
    first."""
    n = int(images.shape[0])
    if n < 2:
        return []
    plain = [content_keypoints(im) for im in images]
    mirrored: dict[int, Keypoints | None] = {}  # made when first needed: most pairs settle

    def mirror(j: int) -> Keypoints | None:
        if j not in mirrored:
            mirrored[j] = content_keypoints(images[j], mirror=True)
        return mirrored[j]

    parent = list(range(n))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i in range(n):
        for j in range(i + 1, n):
            if root(i) == root(j):
                continue  # already one group: no need to prove it again
            if shares_content(plain[i], plain[j]) or shares_content(plain[i], mirror(j)):
                parent[root(j)] = root(i)
    groups: dict[int, list[int]] = {}
    for i in range(n):
        groups.setdefault(root(i), []).append(i)
    return sorted((g for g in groups.values() if len(g) > 1), key=lambda g: g[0])


def _luminance(image: torch.Tensor) -> torch.Tensor:
    """(C, H, W) -> (h, w) luminance with its longer side at ``SIDE`` px (area-averaged when
    shrinking), or for a small input at twice its side, at least ``MIN_SIDE`` (bilinear)."""
    x = image.detach().to("cpu", torch.float32).clamp(0, 1)
    if x.shape[0] == 3:
        x = (0.299 * x[0] + 0.587 * x[1] + 0.114 * x[2])[None]
    else:
        x = x.mean(0, keepdim=True)
    h, w = x.shape[-2:]
    # enlarging a 32-px input to 160 px adds pixels, not detail: keypoints cost per pixel
    scale = min(SIDE, max(MIN_SIDE, 2 * max(h, w))) / max(h, w)
    size = (max(1, round(h * scale)), max(1, round(w * scale)))
    mode = "area" if scale < 1 else "bilinear"
    kw = {} if mode == "area" else {"align_corners": False}
    return F.interpolate(x[None], size=size, mode=mode, **kw)[0, 0]


def _features(grey: torch.Tensor) -> Keypoints | None:
    from scipy.ndimage import gaussian_filter
    from skimage.feature import ORB

    pixels = grey.numpy().astype(np.float64)
    orb = ORB(n_keypoints=KEYPOINTS, fast_threshold=FAST_THRESHOLD, downscale=1.2, n_scales=8)
    try:
        orb.detect_and_extract(pixels)
    except (RuntimeError, ValueError):  # too small or too flat for a single keypoint
        return None
    if orb.descriptors is None or len(orb.keypoints) < 3:
        return None
    blurred = gaussian_filter(pixels, BLUR_PX)
    return Keypoints(np.asarray(orb.keypoints), np.asarray(orb.descriptors), blurred)


def shares_content(a: Keypoints | None, b: Keypoints | None) -> bool:
    """Whether at least ``MIN_INLIERS`` matched keypoints of ``a`` and ``b`` agree on one
    change of scale and position (a rotation of at most ``MAX_ROTATION_DEG``), and the
    two images, aligned by it, show the same pixels where they overlap (``_same_pixels``)."""
    if a is None or b is None:
        return False
    from skimage.transform import SimilarityTransform

    matches = _matches(a.descriptors, b.descriptors)
    if len(matches) < MIN_INLIERS:
        return False
    src = b.points[matches[:, 1]]  # (row, column)
    dst = a.points[matches[:, 0]]
    fit = _similarity_ransac(src[:, 1] + 1j * src[:, 0], dst[:, 1] + 1j * dst[:, 0])
    if fit is None:
        return False
    turn, shift = fit
    if abs(math.degrees(float(np.angle(turn)))) > MAX_ROTATION_DEG:
        return False
    model = SimilarityTransform(
        scale=float(abs(turn)), rotation=float(np.angle(turn)), translation=(shift.real, shift.imag)
    )
    return _same_pixels(a.grey, b.grey, model)


def _similarity_ransac(src: np.ndarray, dst: np.ndarray) -> tuple[complex, complex] | None:
    """RANSAC for the similarity ``dst = turn * src + shift`` (points as complex ``x + iy``;
    ``turn`` holds the scale and rotation): every 2-match hypothesis (all pairs when there
    are at most ``RANSAC_TRIALS``, else that many drawn) scored at once, the best one's
    inliers refitted by least squares, and that fit's inliers counted. None
    when fewer than ``MIN_INLIERS`` agree. The same estimate as scikit-image's ``ransac``
    with ``SimilarityTransform`` (2-point samples, Umeyama's least squares), vectorised:
    its per-trial Python loop cost about 20 ms a pair that reached it."""
    m = len(src)
    if m * (m - 1) // 2 <= RANSAC_TRIALS:
        first, second = np.triu_indices(m, 1)
    else:  # a fixed seed: the same set gives the same caveats on every machine and run
        rng = np.random.default_rng(0)
        first = rng.integers(0, m, RANSAC_TRIALS)
        second = (first + rng.integers(1, m, RANSAC_TRIALS)) % m
    span = src[second] - src[first]
    usable = np.abs(span) > 1e-9
    if not usable.any():
        return None
    first, second, span = first[usable], second[usable], span[usable]
    turns = (dst[second] - dst[first]) / span
    shifts = dst[first] - turns * src[first]
    residuals = np.abs(turns[:, None] * src[None, :] + shifts[:, None] - dst[None, :])
    agree = residuals < RESIDUAL_PX
    inliers = agree[agree.sum(1).argmax()]
    p, q = src[inliers], dst[inliers]
    p_mean, q_mean = p.mean(), q.mean()
    spread = float((np.abs(p - p_mean) ** 2).sum())
    if spread <= 1e-9:
        return None
    turn = complex((np.conj(p - p_mean) * (q - q_mean)).sum() / spread)
    shift = complex(q_mean - turn * p_mean)
    if int((np.abs(turn * src + shift - dst) < RESIDUAL_PX).sum()) < MIN_INLIERS:
        return None
    return turn, shift


def _same_pixels(a: np.ndarray, b: np.ndarray, b_to_a: SimilarityTransform) -> bool:
    """Whether ``b``, carried into ``a``'s frame by the similarity ``b_to_a``, correlates
    with ``a`` at ``MIN_CORRELATION`` or more over the pixels both show. Keypoints agree on
    structure, which aligned photos of different subjects can share (faces, centred
    objects); crops of one photo also agree on every pixel."""
    from skimage.transform import warp

    carried = warp(b, b_to_a.inverse, output_shape=a.shape, order=1, cval=np.nan)
    shared = ~np.isnan(carried)
    if int(shared.sum()) < MIN_OVERLAP_PX:
        return False
    x = a[shared] - a[shared].mean()
    y = carried[shared] - carried[shared].mean()
    scale = math.sqrt(float((x * x).sum()) * float((y * y).sum()))
    return scale > 0 and float((x * y).sum()) / scale >= MIN_CORRELATION


def _matches(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``(M, 2)`` index pairs of binary descriptors ``a`` and ``b`` that are each other's
    nearest under the Hamming distance and pass Lowe's ratio test (``MAX_RATIO``): what
    ``skimage.feature.match_descriptors(a, b, cross_check=True, max_ratio=MAX_RATIO)``
    returns, about 8x faster at 300 keypoints, because the distances of 0/1 vectors come
    from one matrix product (|x| + |y| - 2 x.y) instead of a pairwise loop over bits."""
    x, y = a.astype(np.float32), b.astype(np.float32)
    d = x.sum(1)[:, None] + y.sum(1)[None, :] - 2 * (x @ y.T)
    nearest = d.argmin(1)
    rows = np.arange(len(a))
    keep = d.argmin(0)[nearest] == rows  # cross-checked: b's nearest is a's too
    if d.shape[1] > 1:
        best, second = np.partition(d, 1, axis=1)[:, :2].T
        keep &= best / np.maximum(second, np.finfo(np.float32).eps) < MAX_RATIO
    return np.stack([rows[keep], nearest[keep]], 1)
