"""The vectorised RANSAC of ``NEAR_DUPLICATE_IMAGES`` against a planted similarity and
against scikit-image's ``ransac`` with ``SimilarityTransform``, which it replaced."""

from __future__ import annotations

import numpy as np
import pytest
from protolens_server.engine._near_duplicates import (
    MIN_INLIERS,
    RANSAC_TRIALS,
    RESIDUAL_PX,
    _similarity_ransac,
)

TURN = 1.3 * np.exp(0.05j)  # scale 1.3, rotated by about 3 degrees
SHIFT = 12.0 - 7.0j


def _planted(inliers: int, outliers: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    src = rng.uniform(0, 160, inliers + outliers) + 1j * rng.uniform(0, 160, inliers + outliers)
    dst = TURN * src + SHIFT + (rng.normal(0, 0.3, len(src)) + 1j * rng.normal(0, 0.3, len(src)))
    dst[inliers:] = rng.uniform(0, 160, outliers) + 1j * rng.uniform(0, 160, outliers)
    return src, dst


@pytest.mark.parametrize(("inliers", "outliers"), [(12, 6), (40, 20), (60, 240)])
def test_finds_the_planted_similarity_among_outliers(inliers: int, outliers: int) -> None:
    # 18 matches: every 2-match hypothesis is tried; 300: RANSAC_TRIALS drawn ones
    src, dst = _planted(inliers, outliers, seed=inliers)
    fit = _similarity_ransac(src, dst)
    assert fit is not None
    turn, shift = fit
    assert abs(turn - TURN) < 0.01
    assert abs(shift - SHIFT) < 1.0


def test_too_few_agreeing_matches_is_no_fit() -> None:
    src, dst = _planted(MIN_INLIERS - 1, 30, seed=3)
    assert _similarity_ransac(src, dst) is None


def test_matches_at_one_point_are_no_fit() -> None:
    src = np.full(20, 5.0 + 5.0j)
    assert _similarity_ransac(src, src + 1) is None


def test_agrees_with_scikit_image() -> None:
    from skimage.measure import ransac
    from skimage.transform import SimilarityTransform

    for seed in range(5):
        src, dst = _planted(30, 30, seed=100 + seed)
        points = [np.stack([z.real, z.imag], 1) for z in (src, dst)]
        model, _ = ransac(
            points,
            SimilarityTransform,
            min_samples=2,
            residual_threshold=RESIDUAL_PX,
            max_trials=RANSAC_TRIALS,
            rng=seed,
        )
        fit = _similarity_ransac(src, dst)
        assert fit is not None and model is not None
        theirs = model.scale * np.exp(1j * model.rotation)
        assert abs(fit[0] - theirs) < 0.01
        assert abs(fit[1] - complex(*model.translation)) < 1.0
