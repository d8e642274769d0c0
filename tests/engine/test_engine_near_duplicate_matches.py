"""The descriptor matcher of NEAR_DUPLICATE_IMAGES (a private piece: no public verb returns
matches; ``near_duplicate_groups`` is tested on real photos in tests/scores)."""

from __future__ import annotations

import numpy as np
import torch
from protolens_server.engine import content_keypoints
from protolens_server.engine._near_duplicates import MAX_RATIO, _matches
from protolens_server.scores.samples import crops, photo
from skimage.feature import match_descriptors


def test_descriptor_matches_are_scikit_image_s() -> None:
    """``_matches`` (Hamming distances from a matrix product) finds exactly the pairs
    ``skimage.feature.match_descriptors`` does, on real keypoints and on descriptors
    with exact ties and zero distances."""
    feats = []
    for k, name in enumerate(("coffee", "rocket", "grass")):
        for im in crops(photo(name), 2, 160, np.random.default_rng(k)):
            x = torch.from_numpy(np.asarray(im.convert("RGB"), np.float32) / 255)
            feats.append(content_keypoints(x.permute(2, 0, 1)))
    assert all(f is not None for f in feats)
    rng = np.random.default_rng(0)
    made = rng.random((40, 256)) < 0.5
    tied = np.concatenate([made[:10], made[:10], made[10:20] ^ (rng.random((10, 256)) < 0.05)])
    cases = [(a[1], b[1]) for a in feats for b in feats]  # type: ignore[index]
    cases += [(made, tied), (tied, made), (made[:1], tied), (made, made[:1])]
    matched = 0
    for a, b in cases:
        want = match_descriptors(a, b, cross_check=True, max_ratio=MAX_RATIO)
        got = _matches(a, b)
        assert np.array_equal(got, want)
        matched += len(got)
    assert matched > 100  # the cases match something
