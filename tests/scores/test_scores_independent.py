"""Scores agree with an independent computation (own hooks, numpy and scipy) on the stored PNG."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from protolens_server.engine import GenerationConfig, generate
from protolens_server.imageio import decode_png, encode_png
from protolens_server.scores.scoring import score_prototypes
from scipy.stats import spearmanr

LAYERS = ("block1", "block2", "block3", "block4")


def _own_activations(net: torch.nn.Module, spec, x01: torch.Tensor) -> dict[str, np.ndarray]:
    """Spatial means per channel from hooks registered here, plus the logits."""
    got: dict[str, torch.Tensor] = {}
    handles = [
        getattr(net, name).register_forward_hook(
            lambda _m, _i, out, name=name: got.__setitem__(name, out.mean(dim=(2, 3)))
        )
        for name in LAYERS
    ]
    try:
        with torch.no_grad():
            got["logits"] = net(spec.normalise(x01))
    finally:
        for h in handles:
            h.remove()
    return {k: v.double().numpy() for k, v in got.items()}


def _folder_images(root: Path, class_names: tuple[str, ...]) -> tuple[torch.Tensor, np.ndarray]:
    images, labels = [], []
    for folder in sorted(root.iterdir()):
        label = (
            int(folder.name)
            if folder.name.isdigit()
            else class_names.index(folder.name.replace("_", " "))
        )
        for f in sorted(folder.glob("*.png")):
            array = np.asarray(Image.open(f).convert("RGB"), dtype=np.float32) / 255.0
            images.append(torch.from_numpy(array).permute(2, 0, 1))
            labels.append(label)
    return torch.stack(images), np.array(labels)


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _rho(a: np.ndarray, b: np.ndarray) -> float:
    return float(spearmanr(a, b).statistic)


def test_prototype_scores_match_numpy_and_scipy(handle, shapenet, reference_folder, tmp_path):
    config = GenerationConfig(steps=24, equidistant_steps=4)
    (proto,) = generate(handle, [2], config, seed=3)
    (scores,) = score_prototypes(
        handle, [proto], reference_folder, robustness_samples=4, cache_dir=tmp_path
    )
    d = scores.to_dict()
    assert d["layers"] == [*LAYERS, "logits"]
    assert proto.scores is scores

    ref_x, ref_y = _folder_images(reference_folder, handle.class_names)
    ref = _own_activations(shapenet, handle.input_spec, ref_x)
    stored = decode_png(encode_png(proto.image))  # what the user downloads
    mine = _own_activations(shapenet, handle.input_spec, stored[None])
    c = 2
    normalised = []
    for i, layer in enumerate(d["layers"]):
        x, a = ref[layer], mine[layer][0]
        means = {k: x[ref_y == k].mean(axis=0).astype(np.float32) for k in np.unique(ref_y)}
        m = means[c].astype(np.float64)
        assert abs(d["spearman"][i] - _rho(a, m)) < 1e-6, layer
        assert abs(d["cosine"][i] - _cos(a, m)) < 1e-6, layer
        assert abs(d["l1"][i] - np.abs(a - m).mean()) < 1e-5, layer
        other = np.mean([_rho(a, means[k].astype(np.float64)) for k in means if k != c])
        assert abs(d["spearman_other"][i] - other) < 1e-6, layer
        # natural levels: leave-one-out for the class, the class mean for other images
        own = x[ref_y == c]
        loo = [_rho(own[j], (own.sum(0) - own[j]) / (len(own) - 1)) for j in range(len(own))]
        away = [_rho(row, x[ref_y == c].mean(0)) for row in x[ref_y != c]]
        same, diff = np.mean(loo), np.mean(away)
        assert abs(d["spearman_natural_same"][i] - same) < 1e-6, layer
        assert abs(d["spearman_natural_other"][i] - diff) < 1e-5, layer
        expected = (_rho(a, m) - diff) / (same - diff)
        if d["spearman_reason"][i]:  # not separated by the reference set: no number
            assert d["spearman_normalised"][i] is None, layer
            continue
        assert abs(d["spearman_normalised"][i] - expected) < 1e-4, layer
        normalised.append(expected)
    assert d["path_similarity_layers"] == len(normalised) >= 3
    assert abs(d["path_similarity"] - np.median(normalised)) < 1e-4
    r = d["robustness"]
    low, mean = r["probability_min_over_transforms"], r["probability_mean_over_transforms"]
    assert r["transform_samples"] == 4 and 0 <= low <= mean <= 1
    logits = mine["logits"][0]
    assert abs(r["logit_margin"] - (logits[c] - np.max(np.delete(logits, c)))) < 1e-4
