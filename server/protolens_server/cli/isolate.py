"""``protolens isolate IMAGE``: which parts of a real image carry a class, no service needed.

Optimises a soft mask over the image (``engine.isolate``: sparse, smooth, robust to
the engine's transforms) and writes ``NAME-mask.png`` (grayscale: white = kept),
``NAME-isolated.png`` (the image with the mask as its alpha channel) and
``NAME.json`` (the class probability of the whole image, of the kept part and with
the kept part removed; the config, seed and model digest), NAME being the image's
file name and the class, e.g. ``cat-285-Egyptian_Mau``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from protolens_server.cli.edge import command_errors
from protolens_server.cli.generate import _add_model_arguments

# (flag, config field, type, metavar, help): the IsolationConfig options on the command line
_FLAGS = [
    ("--steps", "steps", int, "N", "optimisation steps"),
    ("--lr", "lr", float, "LR", "learning rate of the mask"),
    ("--sparsity", "sparsity", float, "W", "weight of the mask's mean (higher: smaller masks)"),
    ("--smoothness", "smoothness", float, "W", "weight of the mask's total variation"),
    ("--mask-stride", "mask_stride", int, "PX", "mask resolution: one value per PX x PX pixels"),
    ("--transforms", "transforms", str, "PRESET", "none | small | medium | large | xlarge"),
]


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "+-." else "_" for c in text.strip())[:80] or "image"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "isolate",
        help="find the parts of a real image that carry a class (needs the server extras)",
        description=(
            "Feature isolation on this machine, no service needed: a soft mask over IMAGE that "
            "keeps what the model needs to see class CLASS, and as little else as possible. "
            "Writes NAME-mask.png, NAME-isolated.png (RGBA: the mask as alpha) and NAME.json "
            "(the class probability with the whole image, the kept part, the kept part "
            "removed). IMAGE is resized and centre-cropped to the model's input. "
            "docs/modes.md says how the mask is made."
        ),
    )
    parser.add_argument("image", metavar="IMAGE", help="a PNG or JPEG photo")
    _add_model_arguments(parser)
    parser.add_argument("--target", required=True, metavar="CLASS", help="class index or name")
    g = parser.add_argument_group("isolation")
    for flag, field, kind, metavar, text in _FLAGS:
        g.add_argument(flag, dest=f"iso_{field}", type=kind, metavar=metavar, help=text)
    g.add_argument("--seed", type=int, default=0, metavar="N", help="random seed")
    parser.add_argument("--out", "-o", required=True, metavar="DIR", help="folder for the files")
    parser.add_argument("--json", action="store_true", help="print the record on stdout")
    parser.set_defaults(func=run)


@command_errors()
def run(args: argparse.Namespace) -> int:
    from protolens_server import ENGINE_VERSION
    from protolens_server.cli.generate import handle_device, load_cli_model, prepare_out_dir
    from protolens_server.engine import IsolationConfig, isolate
    from protolens_server.imageio import encode_png, load_image
    from protolens_server.models import resolve_class

    changes = {
        field: getattr(args, f"iso_{field}")
        for _, field, _, _, _ in _FLAGS
        if getattr(args, f"iso_{field}") is not None
    }
    config = IsolationConfig(**changes)
    device = handle_device(args.device)
    handle = load_cli_model(args)
    target = resolve_class(handle, args.target, field="--target")
    spec = handle.input_spec
    image = load_image(args.image, spec.height, spec.width, spec.channels)
    out = prepare_out_dir(args.out)
    found = isolate(handle, image, target, config, seed=args.seed, device=device)
    names = handle.class_names
    label = names[target] if target < len(names) else str(target)
    stem = f"{_slug(Path(args.image).stem)}-{target}-{_slug(label)}"
    (out / f"{stem}-mask.png").write_bytes(encode_png(found.mask))
    (out / f"{stem}-isolated.png").write_bytes(encode_png(found.isolated, alpha=True))
    record = {
        "schema": "protolens.isolation.v1",
        "image": str(args.image),
        "mask_file": f"{stem}-mask.png",
        "isolated_file": f"{stem}-isolated.png",
        "target": {"class": target, "name": label},
        "probability": found.probability,
        "probability_kept": found.probability_kept,
        "probability_removed": found.probability_removed,
        "mask_mean": found.mask_mean,
        "model": handle.name,
        "model_digest": handle.digest,
        "config": config.to_dict(),
        "seed": args.seed,
        "engine_version": ENGINE_VERSION,
    }
    (out / f"{stem}.json").write_text(json.dumps(record, indent=2) + "\n")
    if args.json:
        print(json.dumps(record, indent=2))
    else:
        print(
            f"{label}: p={found.probability:.3f} whole, {found.probability_kept:.3f} kept"
            f" ({found.mask_mean:.0%} of the image), {found.probability_removed:.3f} removed"
            f" -> {out / stem}-*.png"
        )
    return 0
