#!/usr/bin/env python3
"""How well does NEAR_DUPLICATE_IMAGES tell views of one photo from photos of other subjects,
and what does it cost? (``engine/_near_duplicates.py``)

    python bench/near_duplicates.py [--crops 6] [--size 224] [--out FILE.json]

Random square crops (the evaluation's ``scores.samples.crops``: side from the model's
input to the photo's short side, half of them mirrored) of 16 scikit-image photos, loaded
as a 224-px model receives them. Every pair is tested with the module's own pair test
(mirrored as well): pairs of one photo are split by how much the two crops overlap (the
shared area over the smaller crop), pairs of different photos should never be linked.
Then 100 faces of scikit-image's LFW subset (25 px, aligned: eyes and mouth in the same
places; different photos, a few of one person), which share structure, not pixels: no
pair should be linked. Then the cost: per image (keypoints of the image and its mirror),
and per class for a class of distinct photos, where no pair settles early and every pair is tested,
and for a class of 32 faces, look-alikes whose pairs often reach the transform fit.
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from protolens_server.engine import content_keypoints, near_duplicate_groups, shares_content
from protolens_server.scores.samples import crop_boxes, cut, photo

PHOTOS = (
    "coffee", "camera", "chelsea", "rocket", "astronaut", "hubble_deep_field",
    "immunohistochemistry", "retina", "grass", "gravel", "brick", "colorwheel", "page",
    "text", "horse", "moon",
)  # fmt: skip
BINS = ((0.0, 0.0), (1e-9, 0.25), (0.25, 0.5), (0.5, 1.0))  # overlap ranges (inclusive)


def load(img: Image.Image, size: int) -> torch.Tensor:
    """As the reference loader does: scale to cover ``size``, centre-crop, [0, 1] CHW."""
    w, h = img.size
    s = size / min(w, h)
    img = img.resize((max(size, round(w * s)), max(size, round(h * s))), Image.BICUBIC)
    w, h = img.size
    left, top = (w - size) // 2, (h - size) // 2
    a = np.asarray(img.crop((left, top, left + size, top + size)).convert("RGB"), np.float32)
    return torch.from_numpy(a / 255).permute(2, 0, 1)


def crops_with_boxes(
    name: str, n: int, size: int, rng: np.random.Generator
) -> list[tuple[torch.Tensor, tuple[int, int, int]]]:
    p = photo(name)
    if min(p.size) < size:
        f = size / min(p.size)
        p = p.resize((max(size, round(p.size[0] * f)), max(size, round(p.size[1] * f))))
    return [(load(cut(p, box), size), box[:3]) for box in crop_boxes(p.size, n, size, rng)]


def overlap(a: tuple[int, int, int], b: tuple[int, int, int]) -> float:
    (l1, t1, s1), (l2, t2, s2) = a, b
    dx = max(0, min(l1 + s1, l2 + s2) - max(l1, l2))
    dy = max(0, min(t1 + s1, t2 + s2) - max(t1, t2))
    return dx * dy / min(s1, s2) ** 2


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--crops", type=int, default=6, help="crops per photo (default 6)")
    p.add_argument("--size", type=int, default=224, help="model input side (default 224)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("bench/results/near_duplicates.json"))
    args = p.parse_args()
    torch.set_num_threads(1)
    rng = np.random.default_rng(args.seed)
    items = [
        (name, *c) for name in PHOTOS for c in crops_with_boxes(name, args.crops, args.size, rng)
    ]

    started = time.perf_counter()
    feats = [content_keypoints(im) for _, im, _ in items]
    mirrored = [content_keypoints(im, mirror=True) for _, im, _ in items]
    per_image_s = (time.perf_counter() - started) / len(items)

    same: list[tuple[float, bool]] = []
    linked_different: list[tuple[str, str]] = []
    different = 0
    started = time.perf_counter()
    for i, j in itertools.combinations(range(len(items)), 2):
        shares = shares_content(feats[i], feats[j]) or shares_content(feats[i], mirrored[j])
        if items[i][0] == items[j][0]:
            same.append((overlap(items[i][2], items[j][2]), shares))
        else:
            different += 1
            if shares:
                linked_different.append((items[i][0], items[j][0]))
    pairs = len(items) * (len(items) - 1) // 2
    per_pair_s = (time.perf_counter() - started) / pairs

    # groups per photo: how many groups a photo's crops fall into (1 = all linked)
    groups_per_photo = {}
    for name in PHOTOS:
        ims = torch.stack([im for n, im, _ in items if n == name])
        groups = near_duplicate_groups(ims)
        linked = sum(len(g) for g in groups)
        groups_per_photo[name] = {"groups": len(groups), "crops_in_a_group": linked}

    # aligned faces: the same layout in every image, different photos
    from skimage import data

    faces = [
        load(Image.fromarray((f * 255).astype(np.uint8)).convert("RGB"), args.size)
        for f in data.lfw_subset()[:100]
    ]
    face_feats = [content_keypoints(im) for im in faces]
    face_mirrored = [content_keypoints(im, mirror=True) for im in faces]
    started = time.perf_counter()
    face_links = [
        (i, j)
        for i, j in itertools.combinations(range(len(faces)), 2)
        if shares_content(face_feats[i], face_feats[j])
        or shares_content(face_feats[i], face_mirrored[j])
    ]
    per_face_pair_s = (time.perf_counter() - started) / (len(faces) * (len(faces) - 1) // 2)
    # a class of look-alikes (32 faces: a class's most compared images): pairs whose
    # keypoints match often enough to reach the fit, unlike distinct photos'
    started = time.perf_counter()
    lookalike_groups = near_duplicate_groups(torch.stack(faces[:32]))
    lookalike_s = time.perf_counter() - started

    # a class of distinct photos: every pair tested, the worst case for time
    distinct = torch.stack([crops_with_boxes(n, 1, args.size, rng)[0][0] for n in PHOTOS])
    started = time.perf_counter()
    distinct_groups = near_duplicate_groups(distinct)
    distinct_s = time.perf_counter() - started

    rows = []
    for lo, hi in BINS:
        hits = [s for o, s in same if lo <= o <= hi]
        rows.append({"overlap": [lo, hi], "pairs": len(hits), "linked": sum(hits)})
    result = {
        "command": "python bench/near_duplicates.py "
        + " ".join(f"--{k} {v}" for k, v in (("crops", args.crops), ("size", args.size))),
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "torch_threads": 1,
        "photos": len(PHOTOS),
        "images": len(items),
        "same_photo_pairs_by_overlap": rows,
        "different_photo_pairs": different,
        "different_photo_pairs_linked": len(linked_different),
        "linked_different_examples": linked_different[:10],
        "aligned_face_pairs": len(faces) * (len(faces) - 1) // 2,
        "aligned_face_pairs_linked": face_links,
        "groups_per_photo": groups_per_photo,
        "distinct_photos_class": {
            "images": len(PHOTOS),
            "groups": distinct_groups,
            "seconds": round(distinct_s, 2),
        },
        "lookalike_class": {
            "images": 32,
            "groups": lookalike_groups,
            "seconds": round(lookalike_s, 2),
        },
        "seconds_per_image_keypoints_with_mirror": round(per_image_s, 4),
        "seconds_per_pair_test": round(per_pair_s, 5),
        "seconds_per_face_pair_test": round(per_face_pair_s, 5),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{len(items)} crops of {len(PHOTOS)} photos at {args.size} px, 1 thread")
    print("| crops of one photo, overlap | pairs | linked |")
    print("|---|---|---|")
    for r in rows:
        lo, hi = r["overlap"]
        share = r["linked"] / max(1, r["pairs"])
        print(f"| {lo:.2f}-{hi:.2f} | {r['pairs']} | {r['linked']} ({share:.0%}) |")
    print(f"| different photos | {different} | {len(linked_different)} |")
    print(f"| aligned faces (LFW) | {len(faces) * (len(faces) - 1) // 2} | {len(face_links)} |")
    whole = [g for g in groups_per_photo.values() if g["crops_in_a_group"] == args.crops]
    one = sum(1 for g in whole if g["groups"] == 1)
    print(
        f"photos whose {args.crops} crops form one group: {one}/{len(PHOTOS)}; a class of "
        f"{len(PHOTOS)} distinct photos: {len(distinct_groups)} groups in {distinct_s:.1f} s"
    )
    print(
        f"keypoints {per_image_s * 1000:.0f} ms per image (with its mirror), "
        f"{per_pair_s * 1000:.1f} ms per pair test ({per_face_pair_s * 1000:.1f} ms per pair of "
        f"faces); a class of 32 faces: {len(lookalike_groups)} groups in {lookalike_s:.1f} s"
    )


if __name__ == "__main__":
    main()
