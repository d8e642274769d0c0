"""``protolens isolate IMAGE``: which parts of a real image carry a class.

On this machine by default (no service needed), or, with ``--address``, as a
CreateIsolationJob on a running service (its queue, cache and workers) through the SDK.

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
    parser.add_argument(
        "--address",
        metavar="HOST[:PORT]",
        help="run it on this protolens service (CreateIsolationJob; --model is then a registered"
        " name; $PROTOLENS_API_KEY and the TLS variables apply) instead of locally",
    )
    parser.add_argument(
        "--timeout", type=float, default=600.0, metavar="SECONDS", help="with --address: wait"
    )
    parser.add_argument("--json", action="store_true", help="print the record on stdout")
    parser.set_defaults(func=run)


@command_errors()
def run(args: argparse.Namespace) -> int:
    if args.address:
        return _run_on_service(args)
    from protolens_server import ENGINE_VERSION
    from protolens_server.cli.generate import (
        handle_device,
        load_cli_model,
        prepare_out_dir,
        progress_bar,
    )
    from protolens_server.cpu_budget import configure_torch_threads
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
    configure_torch_threads()  # as generate: the CPUs this process may use, fixed for the run
    out = prepare_out_dir(args.out)
    with progress_bar(config.steps, "isolate") as bar:
        bar.phase(f"loading {args.model}")
        handle = load_cli_model(args)
        target = resolve_class(handle, args.target, field="--target")
        spec = handle.input_spec
        image = load_image(args.image, spec.height, spec.width, spec.channels)
        bar.phase("optimising the mask")
        found = isolate(
            handle, image, target, config, seed=args.seed, device=device,
            on_progress=bar.on_progress,
        )  # fmt: skip
    names = handle.class_names
    label = names[target] if target < len(names) else str(target)
    found_values = {
        "probability": found.probability,
        "probability_kept": found.probability_kept,
        "probability_removed": found.probability_removed,
        "mask_mean": found.mask_mean,
    }
    source = {"model": handle.name, "model_digest": handle.digest, "job": ""}
    rgba = encode_png(found.isolated, alpha=True)
    _write(args, out, target, label, rgba, encode_png(found.mask), found_values,
           {**source, "config": config.to_dict(), "engine_version": ENGINE_VERSION})  # fmt: skip
    return 0


def _write(
    args: argparse.Namespace,
    out: Path,
    target: int,
    label: str,
    isolated_png: bytes,
    mask_png: bytes,
    found: dict[str, float],
    source: dict[str, object],
) -> None:
    """NAME-mask.png, NAME-isolated.png and NAME.json in ``out``; one line (or --json)."""
    stem = f"{_slug(Path(args.image).stem)}-{target}-{_slug(label)}"
    (out / f"{stem}-mask.png").write_bytes(mask_png)
    (out / f"{stem}-isolated.png").write_bytes(isolated_png)
    record = {
        "schema": "protolens.isolation.v1",
        "image": str(args.image),
        "mask_file": f"{stem}-mask.png",
        "isolated_file": f"{stem}-isolated.png",
        "target": {"class": target, "name": label},
        **found,
        **source,
        "seed": args.seed,
    }
    (out / f"{stem}.json").write_text(json.dumps(record, indent=2) + "\n")
    if args.json:
        print(json.dumps(record, indent=2))
    else:
        print(
            f"{label}: p={found['probability']:.3f} whole, {found['probability_kept']:.3f} kept"
            f" ({found['mask_mean']:.0%} of the image), {found['probability_removed']:.3f}"
            f" removed -> {out / stem}-*.png"
        )


def _run_on_service(args: argparse.Namespace) -> int:
    """The same files from a CreateIsolationJob on the service at ``--address``."""
    import io

    from PIL import Image
    from protolens.auth import connection
    from protolens.client import Client
    from protolens.errors import ProtolensError

    from protolens_server.cli.generate import prepare_out_dir

    config = {
        field: getattr(args, f"iso_{field}")
        for _, field, _, _, _ in _FLAGS
        if getattr(args, f"iso_{field}") is not None
    }
    out = prepare_out_dir(args.out)
    with Client(args.address, timeout=args.timeout, **connection()) as client:
        job = client.create_isolation_job(
            args.model, args.image, args.target, config=config, seed=args.seed
        )
        job = client.wait(job, timeout=args.timeout)
        if not job.succeeded or job.isolation is None:
            why = job.error.message if job.error else job.state
            raise ProtolensError(f"isolation job {job.id} did not succeed: {why}")
        proto = client.get_prototype(job, 0)
    summary = job.prototypes[0]
    target = summary.target.classes[0]
    label = summary.target.class_names[0] or str(target)
    mask = Image.open(io.BytesIO(proto.png)).getchannel("A")
    buf = io.BytesIO()
    mask.save(buf, format="PNG")
    found = {
        "probability": job.isolation.probability,
        "probability_kept": job.isolation.probability_kept,
        "probability_removed": job.isolation.probability_removed,
        "mask_mean": job.isolation.mask_mean,
    }
    source = {"model": job.model, "model_digest": job.model_digest, "job": job.name,
              "config": job.isolation.config}  # fmt: skip
    _write(args, out, target, label, proto.png, buf.getvalue(), found, source)
    return 0
