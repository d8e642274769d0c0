"""``protolens generate``: prototypes of a local model, no service needed.

Writes one PNG and one JSON record per prototype into ``--out``
(``281-tabby_cat-0.png`` + ``.json``, ``anti-281-tabby_cat-0``,
``281+207-tabby_cat+Golden_Retriever-0``: names and records as ``protolens.files``
makes them for the service's files too) and with ``--json`` prints one JSON document
with all the records. Every failure is a
``ProtolensError``, which the dispatcher prints as one line (exit 1).

Module top level imports nothing heavy: torch loads only when the command runs.
Adding options (e.g. scoring's ``--reference``/``--plots``) means one more
``_add_*_arguments`` function in ``register`` and a step in ``run`` that
extends the per-prototype records built by ``prototype_record``.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from protolens_server.cli.edge import command_errors

if TYPE_CHECKING:
    from protolens_server.engine import PrototypeScores
    from protolens_server.engine.types import GenerationConfig, ProgressEvent, Prototype, Target
    from protolens_server.models.handle import ModelHandle
    from protolens_server.scores.references import ReferenceSet

DEFAULT_MODEL = "efficientnet_lite0"  # the built-in ImageNet model (models/builtin.py)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "generate",
        help="generate prototypes of a model locally (needs the server extras)",
        description=(
            "Generate prototypes on this machine, no service needed: inputs optimised until "
            "the model is confident of a class. MODEL is a built-in name (efficientnet_lite0), "
            "a TorchScript .pt/.ts, a torch.export .pt2, a TorchServe .mar, or "
            "factory:package.module:function@weights.pth. CLASS is an index or a class name. "
            "Each prototype is written as NAME.png and NAME.json, e.g. 281-tabby_cat-0.png "
            "(docs/prototype-files.md); --reference adds path-similarity scores."
        ),
    )
    parser.add_argument(
        "model_ref",
        nargs="?",
        metavar="MODEL",
        help="the model, as with --model (protolens generate net.ts -t 3 -o out); give it "
        "once, here or with --model",
    )
    _add_model_arguments(parser)
    _add_target_arguments(parser)
    _add_config_arguments(parser)
    _add_output_arguments(parser)
    _add_scoring_arguments(parser)
    # None until resolved: a positional MODEL and a --model that disagree is an error,
    # not a silent choice (resolve_model_ref).
    parser.set_defaults(func=run, model=None)


def _add_model_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("model")
    g.add_argument(
        "--model",
        "-m",
        default=DEFAULT_MODEL,
        metavar="MODEL",
        help=f"model reference (default: {DEFAULT_MODEL})",
    )
    g.add_argument(
        "--input-shape",
        metavar="C,H,W",
        help="input shape for file models without a sidecar JSON, e.g. 3,224,224",
    )
    g.add_argument("--mean", metavar="M[,M,M]", help="per-channel mean in [0,1] image units")
    g.add_argument("--std", metavar="S[,S,S]", help="per-channel std in [0,1] image units")
    g.add_argument(
        "--class-names",
        metavar="FILE",
        help="JSON list of class names or a TorchServe index_to_name.json",
    )
    g.add_argument(
        "--model-output",
        metavar="KIND",
        help="what the model's forward returns where loading cannot tell: multi-label-logits "
        "(one logit per label, trained with a binary cross-entropy per class) or auto (the "
        "default: logits; softmax or sigmoid outputs are recognised); overrides a sidecar's "
        '"output"',
    )
    g.add_argument(
        "--device",
        default="auto",
        help="auto (cuda if available), cpu, cuda or cuda:N (default: auto)",
    )
    g.add_argument(
        "--compile",
        action="store_true",
        help="compile the step's forward with torch.compile (same prototypes; pays on GPUs)",
    )


def _add_target_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("targets (at least one)")
    g.add_argument(
        "--target",
        "-t",
        action="append",
        default=[],
        metavar="CLASS",
        help="a class to generate prototypes of (repeatable)",
    )
    g.add_argument(
        "--antitype",
        action="append",
        default=[],
        metavar="CLASS",
        help="a class to minimise (repeatable)",
    )
    g.add_argument(
        "--hybrid",
        action="append",
        default=[],
        metavar="A,B[,...]",
        help="classes to maximise together in one image (repeatable)",
    )


# (flag, config field, type, metavar, help) for the generation options; defaults come
# from GenerationConfig (read only when the help is shown: it needs torch), so the help
# and the engine never disagree.
_CONFIG_FLAGS: list[tuple[str, str, Callable[[str], Any], str, str]] = [
    ("--prototypes", "prototypes", int, "N", "prototypes per target"),
    ("--steps", "steps", int, "N", "fixed optimisation steps (0 = until converged)"),
    ("--max-steps", "max_steps", int, "N", "most steps when --steps is 0"),
    ("--lr", "lr", float, "LR", "learning rate (0 = found per model)"),
    ("--objective", "objective", str, "NAME", "margin | logit"),
    ("--param", "parameterisation", str, "NAME", "image parameterisation: fourier | pixel | maco"),
    ("--start", "start", str, "NAME", "start image: noise | constant | equidistant"),
    ("--transforms", "transforms", str, "PRESET", "none | small | medium | large | xlarge"),
    ("--diversity", "diversity", float, "W", "diversity weight between a target's prototypes"),
    ("--hf-penalty", "hf_penalty", float, "W", "high-frequency penalty weight"),
    ("--bn-prior", "bn_prior", float, "W", "BatchNorm-statistics prior weight (0 = off)"),
    ("--equidistant-steps", "equidistant_steps", int, "N", "steps to find the equidistant start"),
    ("--max-batch", "max_batch", int, "N", "images per batch (0 = fit the GPU memory)"),
    ("--alpha-penalty", "alpha_penalty", float, "W", "weight of the mean opacity (with --alpha)"),
]


def _engine_default(field: str) -> Any:
    from protolens_server.engine.types import GenerationConfig

    return getattr(GenerationConfig(), field)


def _add_config_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("generation")
    for flag, field, kind, metavar, text in _CONFIG_FLAGS:
        action = g.add_argument(
            flag, dest=f"cfg_{field}", type=kind, default=None, metavar=metavar, help=text
        )
        action.lazy_default = functools.partial(_engine_default, field)  # type: ignore[attr-defined]
    g.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="any other generation option (repeatable), e.g. --set margin_temperature=3"
        " (the fields: docs/engine.md)",
    )
    g.add_argument(
        "--seed", type=int, default=0, metavar="N", help="random seed (same seed, same pixels)"
    )
    g.add_argument(
        "--alpha",
        action="store_true",
        help="an alpha prototype: opacity optimised with the image over random backgrounds,"
        " saved as RGBA (docs/modes.md)",
    )
    g.add_argument("--no-autocast", action="store_true", help="no bf16 autocast on CUDA")
    g.add_argument("--no-channels-last", action="store_true", help="keep NCHW memory layout")


def _add_output_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("output")
    g.add_argument(
        "--out",
        "-o",
        required=True,
        metavar="DIR",
        help="folder for one PNG and one JSON record per prototype (docs/prototype-files.md)",
    )
    g.add_argument(
        "--json",
        action="store_true",
        help="also print one JSON document on stdout: the model, the config and the records",
    )
    g.add_argument(
        "--float",
        action="store_true",
        dest="float_files",
        help="also write each prototype as a lossless float32 tensor (<name>.safetensors); "
        "always done for a model whose input has other than 1 or 3 channels",
    )
    g.add_argument(
        "--preview-channels",
        metavar="C[,C,C]",
        help="the channels the PNG shows (1 for grayscale or 3 for RGB; default: all of a 1- or "
        "3-channel image, else 0,1,2, or 0 for 2 channels)",
    )


@command_errors()
def run(args: argparse.Namespace) -> int:
    from protolens_server.cpu_budget import configure_torch_threads
    from protolens_server.engine import generate
    from protolens_server.lr_memory import DiskRates

    resolve_model_ref(args)
    config = build_config(args)  # cheap checks first, before loading the model
    device = handle_device(args.device)
    # the CPUs this process may use (affinity capped by a cgroup quota), fixed for the run:
    # a rerun on the same machine gives the same pixels
    configure_torch_threads()
    with progress_bar(config.step_budget) as bar:
        bar.phase(f"loading {args.model}")
        handle = load_cli_model(args)
        targets = build_targets(handle, args)
        reference = open_cli_reference(args, handle, targets)  # before the long part
        out = prepare_out_dir(args.out)
        bar.phase(_preparing(config, args.compile))
        prototypes = _run_engine(
            lambda: generate(
                handle,
                targets,
                config,
                seed=args.seed,
                device=device,
                on_progress=bar.on_progress,
                compile=args.compile,
                lr_cache=DiskRates(handle.digest) if handle.digest else None,
            )
        )
        paths = write_pngs(
            prototypes,
            handle,
            out,
            float_files=getattr(args, "float_files", False),
            channels=parse_channels(getattr(args, "preview_channels", None)),
        )
        scores = None
        if reference is not None:
            bar.phase("scoring against the reference images")
            scores = add_scores(args, handle, prototypes, reference, device, paths)
    records = [
        prototype_record(proto, handle, path, None if scores is None else scores[k])
        for k, (proto, path) in enumerate(zip(prototypes, paths, strict=True))
    ]
    for record, path in zip(records, paths, strict=True):
        if path.with_suffix(".safetensors").is_file():
            record["float_file"] = path.with_suffix(".safetensors").name
    write_records(records, paths)
    texts = None if scores is None else [result.summary_text() for result in scores]
    emit(args, handle, config, device, out, records, texts)
    sys.stdout.flush()
    for line in off_target_warnings(records) + caveat_warnings(records):
        print(f"protolens: warning: {line}", file=sys.stderr)
    return 0


# -- steps of run(), each small enough to reuse or extend ------------------------------


def load_cli_model(args: argparse.Namespace) -> ModelHandle:
    from protolens_server.errors import InvalidArgument
    from protolens_server.models import load_model

    output = getattr(args, "model_output", None)
    try:
        return load_model(
            args.model,
            spec=cli_input_spec(args),
            class_names=_class_names_file(args.class_names),
            device=handle_device(args.device),
            output=output,
        )
    except InvalidArgument as exc:
        if output is None or exc.field != "output":
            raise
        raise exc.for_field("--model-output") from exc


def cli_input_spec(args: argparse.Namespace):  # -> InputSpec | None
    from protolens_server.engine.types import InputSpec
    from protolens_server.errors import InvalidArgument

    if not (args.input_shape or args.mean or args.std):
        return None
    if not args.input_shape:
        raise InvalidArgument("--input-shape", "is needed with --mean/--std (e.g. 3,224,224)")
    shape = _numbers(args.input_shape, "--input-shape", int)
    if len(shape) != 3:
        raise InvalidArgument("--input-shape", f"{args.input_shape!r}: expected C,H,W")
    c, h, w = (int(v) for v in shape)
    mean = _numbers(args.mean, "--mean", float) if args.mean else None
    std = _numbers(args.std, "--std", float) if args.std else None
    default_mean, default_std = (
        ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)) if c == 3 else ((0.0,), (1.0,))
    )
    try:
        return InputSpec(c, h, w, mean=tuple(mean or default_mean), std=tuple(std or default_std))
    except InvalidArgument as exc:
        raise InvalidArgument("--input-shape/--mean/--std", exc.message) from exc


def build_targets(handle: ModelHandle, args: argparse.Namespace) -> list[Target]:
    from protolens_server.engine.types import Target
    from protolens_server.errors import InvalidArgument
    from protolens_server.models import resolve_class

    targets: list[Target] = []
    for value in args.target:
        if "layer:" in value:
            targets.append(_unit_target(value))
            continue
        targets.append(Target((resolve_class(handle, value, field="--target"),)))
    for value in args.antitype:
        targets.append(Target((resolve_class(handle, value, field="--antitype"),), "antitype"))
    for value in args.hybrid:
        parts = [p for p in value.split(",") if p.strip()]
        if len(parts) < 2:
            raise InvalidArgument("--hybrid", f"{value!r}: name two or more classes, e.g. 281,207")
        classes = tuple(resolve_class(handle, p, field="--hybrid") for p in parts)
        if len(set(classes)) != len(classes):
            raise InvalidArgument("--hybrid", f"{value!r}: names the same class twice")
        targets.append(Target(classes, "hybrid"))
    if not targets:
        raise InvalidArgument("--target", "give at least one --target, --antitype or --hybrid")
    if getattr(args, "reference", None) is not None and any(t.kind == "unit" for t in targets):
        raise InvalidArgument(
            "--reference", "scores compare with natural images of a class: unit targets have none"
        )
    return list(dict.fromkeys(targets))  # a repeated target would only repeat its files


def _unit_target(text: str) -> Target:
    """``layer:NAME:channel:C...`` (the client's syntax) as an engine unit target."""
    from protolens import unit_target
    from protolens.errors import ProtolensError

    from protolens_server.engine.types import Target, UnitTerm
    from protolens_server.errors import InvalidArgument

    try:
        parsed = unit_target(text)
    except ProtolensError as exc:
        raise InvalidArgument("--target", str(exc).removeprefix("targets: ")) from None
    terms = tuple(
        UnitTerm(u.layer, u.unit, u.index, u.position, u.direction, u.weight)  # type: ignore[arg-type]
        for u in parsed.units
    )
    return Target((), "unit", terms)


def resolve_model_ref(args: argparse.Namespace) -> None:
    """Set ``args.model`` from the positional MODEL or ``--model`` (``check`` and ``layers``
    take the model as their first word; ``generate`` takes it either way)."""
    from protolens_server.errors import InvalidArgument

    positional = getattr(args, "model_ref", None)
    if positional and args.model and positional != args.model:
        raise InvalidArgument(
            "--model",
            f"two models given: {positional!r} (first word) and {args.model!r} (--model); "
            "give the model once",
        )
    args.model = positional or args.model or DEFAULT_MODEL


def build_config(args: argparse.Namespace) -> GenerationConfig:
    from protolens_server.engine.types import GenerationConfig
    from protolens_server.errors import InvalidArgument

    changes = {
        field: getattr(args, f"cfg_{field}")
        for _, field, _, _, _ in _CONFIG_FLAGS
        if getattr(args, f"cfg_{field}") is not None
    }
    if args.alpha:
        changes["alpha"] = True
    if args.no_autocast:
        changes["autocast"] = False
    if args.no_channels_last:
        changes["channels_last"] = False
    try:
        changes.update(GenerationConfig.parse_changes(args.set))
        return GenerationConfig(**changes)
    except InvalidArgument as exc:
        name = exc.field.removeprefix("config").removeprefix(".")
        flag = next(
            (f for f, field, _, _, _ in _CONFIG_FLAGS if field == name), f"--set {name}".strip()
        )
        raise InvalidArgument(flag, exc.message.partition(": ")[2] or exc.message) from exc


def prepare_out_dir(out: str) -> Path:
    from protolens_server.errors import InvalidArgument

    path = Path(out).expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as exc:
        raise InvalidArgument("--out", f"{path} exists and is not a folder") from exc
    except OSError as exc:
        raise InvalidArgument("--out", f"cannot create {path}: {exc.strerror}") from exc
    return path


def handle_device(device: str) -> str:
    import torch

    from protolens_server.errors import InvalidArgument

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        kind = torch.device(device).type
    except RuntimeError as exc:
        raise InvalidArgument(
            "--device", f"{device!r}: expected auto, cpu, cuda or cuda:N"
        ) from exc
    if kind == "cuda" and not torch.cuda.is_available():
        raise InvalidArgument("--device", f"{device!r}: CUDA is not available here; use cpu")
    if kind not in ("cpu", "cuda"):
        raise InvalidArgument("--device", f"{device!r}: expected auto, cpu, cuda or cuda:N")
    return device


def _run_engine(call: Callable[[], list[Prototype]]) -> list[Prototype]:
    import torch

    from protolens_server.errors import InvalidArgument

    try:
        return call()
    except torch.OutOfMemoryError as exc:
        raise InvalidArgument(
            "--max-batch", "out of memory even at batch 1: use a smaller model or --device cpu"
        ) from exc


def write_pngs(
    prototypes: Sequence[Prototype],
    handle: ModelHandle,
    out: Path,
    *,
    float_files: bool = False,
    channels: Sequence[int] | None = None,
) -> list[Path]:
    """One PNG per prototype (a preview of ``channels``, provenance in its text chunks),
    plus ``<name>.safetensors`` (lossless float32) with ``float_files`` or whenever the
    model's input has other than 1 or 3 channels. Returns the PNG paths."""
    from protolens_server.errors import InvalidArgument
    from protolens_server.imageio import encode_png, encode_tensor

    paths = []
    for proto in prototypes:
        path = out / prototype_filename(proto, handle)
        meta = file_provenance(proto, handle)
        try:
            alpha = proto.config.alpha  # the last channel is the opacity: RGBA
            png = encode_png(proto.image, channels=channels, provenance=meta, alpha=alpha)
            path.write_bytes(png)
            if float_files or int(proto.image.shape[0]) - alpha not in (1, 3):
                path.with_suffix(".safetensors").write_bytes(encode_tensor(proto.image, meta))
        except OSError as exc:
            raise InvalidArgument("--out", f"cannot write {path}: {exc.strerror}") from exc
        paths.append(path)
    return paths


def file_provenance(proto: Prototype, handle: ModelHandle) -> dict[str, str]:
    """What a prototype's PNG and tensor files say about themselves (as the service's do)."""
    import json

    from protolens_server import ENGINE_VERSION

    return {
        "model": handle.name,
        "model_digest": handle.digest,
        "target": json.dumps(proto.target.material(), sort_keys=True, separators=(",", ":")),
        "config": json.dumps(proto.config.to_dict(), sort_keys=True, separators=(",", ":")),
        "seed": str(int(proto.seed)),
        "engine_version": ENGINE_VERSION,
        "index": str(int(proto.index)),
    }


def parse_channels(text: str | None) -> list[int] | None:
    from protolens_server.errors import InvalidArgument

    if not text:
        return None
    try:
        return [int(c) for c in text.split(",") if c.strip()]
    except ValueError as exc:
        raise InvalidArgument(
            "--preview-channels", f"{text!r}: expected channel indices such as 0 or 3,1,2"
        ) from exc


def prototype_filename(proto: Prototype, handle: ModelHandle) -> str:
    """``281-tabby_cat-0.png``: the name every protolens command gives a prototype."""
    from protolens.files import prototype_stem

    classes = proto.target.classes
    names = [handle.class_names[c] for c in classes]
    units = proto.target.label() if proto.target.kind == "unit" else ""
    return prototype_stem(classes, names, proto.target.kind, proto.index, units) + ".png"


def prototype_record(
    proto: Prototype, handle: ModelHandle, path: Path, scores: PrototypeScores | None = None
) -> dict[str, Any]:
    """One prototype's JSON record: the schema the service's files use too (protolens.files)."""
    from protolens.files import prototype_record as record

    from protolens_server import ENGINE_VERSION

    names = handle.class_names
    classes = list(proto.target.classes)
    return record(
        file=path.name,
        classes=classes,
        class_names=[names[c] for c in classes],
        kind=proto.target.kind,
        target_index=proto.index,
        probability=proto.probability,
        logit=proto.logit,
        top5=[(i, names[i], p) for i, p in proto.top5],
        steps=proto.steps,
        seed=proto.seed,
        lr=proto.lr,
        stop_reason=proto.stop_reason,
        multi_label=proto.multi_label,
        scores=None if scores is None else scores.to_dict(),
        provenance={
            "model": handle.name,
            "model_digest": handle.digest,
            "engine_version": ENGINE_VERSION,
            "config": proto.config.to_dict(),
            "seed": proto.seed,
            "reference_digest": "" if scores is None else _reference_digest(scores),
        },
    )


def off_target_warnings(records: Sequence[dict[str, Any]]) -> list[str]:
    """One line per class prototype whose model does not see its target: ranks another
    class first, or for a multi-label model gives the label p < 0.5
    (``protolens.files.off_target``, the rule the service's CLI applies too)."""
    from protolens.files import off_target, off_target_warning

    lines = []
    for r in records:
        top = r["top5"][0] if r["top5"] else None
        if top is None or not off_target(
            kind=r["target"]["kind"],
            classes=r["target"]["classes"],
            top_index=top["index"],
            stop_reason=r["stop_reason"],
            multi_label=r["multi_label"],
            probability=r["probability"],
        ):
            continue
        lines.append(
            off_target_warning(
                label=r["file"],
                top_name=top["name"],
                top_probability=top["probability"],
                probability=r["probability"],
                steps=r["steps"],
                spec_hint="--input-shape, --mean/--std",
                multi_label=r["multi_label"],
            )
        )
    return lines


def caveat_warnings(records: Sequence[dict[str, Any]]) -> list[str]:
    """One line per distinct caveat of the reference set behind the records' scores
    (``protolens.files.caveat_lines``, as the service's CLI prints them)."""
    from protolens.files import caveat_lines

    return caveat_lines(c for r in records for c in (r.get("scores") or {}).get("caveats", ()))


def _reference_digest(scores: PrototypeScores) -> str:
    reference = scores.to_dict().get("reference") or {}
    return str(reference.get("digest", "")) if isinstance(reference, dict) else ""


def write_records(records: list[dict[str, Any]], paths: list[Path]) -> None:
    """``NAME.json`` beside each ``NAME.png``."""
    from protolens_server.errors import InvalidArgument

    for record, png in zip(records, paths, strict=True):
        path = png.with_suffix(".json")
        try:
            path.write_text(json.dumps(record, indent=2) + "\n")
        except OSError as exc:
            raise InvalidArgument("--out", f"cannot write {path}: {exc.strerror}") from exc


def emit(
    args: argparse.Namespace,
    handle: ModelHandle,
    config: GenerationConfig,
    device: str,
    out: Path,
    records: list[dict[str, Any]],
    similarity_texts: list[str] | None = None,
) -> None:
    """``--json``: one document with the records; otherwise one line per prototype (with
    its path similarity in words, e.g. ``0.42 [0.31, 0.55] (12/18 layers)``, and the codes
    of its reference set's caveats, ``caveats=GREYSCALE_CLASS``)."""
    import torch

    from protolens_server import ENGINE_VERSION

    if args.json:
        doc = {
            "model": {
                "name": handle.name,
                "source": handle.source,
                "format": handle.format,
                "digest": handle.digest,
                "num_classes": handle.num_classes,
                "input_spec": handle.input_spec.to_dict(),
            },
            "engine_version": ENGINE_VERSION,
            "device": device,
            "torch_threads": torch.get_num_threads(),  # the CPU threads it ran on
            "seed": args.seed,
            "config": config.to_dict(),
            "out": str(out),
            "prototypes": records,
        }
        print(json.dumps(doc, indent=2))
        return
    for k, r in enumerate(records):
        target = r["target"]
        label = "+".join(target["class_names"])
        kind = "" if target["kind"] == "prototype" else f" ({target['kind']})"
        text = similarity_texts[k] if similarity_texts else ""
        similarity = f"  path_similarity={text}" if text else ""
        codes = sorted({c["code"] for c in (r.get("scores") or {}).get("caveats", ())})
        caveats = f"  caveats={','.join(codes)}" if codes else ""
        print(f"{out / r['file']}  {label}{kind}  p={r['probability']:.3f}{similarity}{caveats}")


def _preparing(config: GenerationConfig, compile: bool) -> str:
    parts = []
    if config.lr == 0:  # the finder's probe runs, unless this model's rate is on disk
        parts.append("learning rate (short probe runs, once per model)")
    if config.start == "equidistant" and config.equidistant_steps > 0:
        parts.append(f"equidistant start ({config.equidistant_steps} steps)")
    text = "preparing" + (": " + ", ".join(parts) if parts else "")
    return text + (", torch.compile on the first steps" if compile else "")


class _Bar:
    """What ``protolens COMMAND`` is doing, on stderr: on a terminal, a tqdm bar (the phase
    in its label: loading, preparing, optimising, scoring; the steps and the best
    probability on the bar); elsewhere (CI logs, ``nohup``, a pipe), one line per phase and
    per tenth of the step budget, so a run of many minutes never sits silent."""

    def __init__(self, total: int, command: str) -> None:
        self.total = total
        self.command = command
        self.bar: Any = None
        self.logged_tenth = -1
        self.loading: tuple[str, float] | None = None
        if sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="step", file=sys.stderr, leave=False)

    def phase(self, text: str) -> None:
        if self.bar is not None:
            self.bar.set_description_str(text, refresh=True)
        elif text.startswith("loading"):
            # said with the next phase: a bad input found while loading stays one line
            self.loading = (text.removeprefix("loading "), time.monotonic())
        else:
            if self.loading is not None:
                name, since = self.loading
                self._log(f"{name} loaded in {time.monotonic() - since:.1f} s")
                self.loading = None
            self._log(text)

    @property
    def on_progress(self) -> Callable[[ProgressEvent], None]:
        return self._on_progress if self.bar is not None else self._log_progress

    def _status(self, event: ProgressEvent) -> str:
        p = max(event.target_probabilities, default=0.0)
        stopped = sum(1 for r in event.stop_reasons if r)
        done = f" {stopped}/{len(event.stop_reasons)} stopped" if stopped else ""
        return f"p={p:.2f}" + (f" lr={event.lr:g}" if event.lr else "") + done

    def _on_progress(self, event: ProgressEvent) -> None:
        self.bar.set_description_str("optimising", refresh=False)
        self.bar.n = min(event.step, self.total)
        self.bar.set_postfix_str(self._status(event), refresh=False)
        self.bar.refresh()

    def _log_progress(self, event: ProgressEvent) -> None:
        tenth = 10 * min(event.step, self.total) // max(self.total, 1)
        if tenth > self.logged_tenth:
            self.logged_tenth = tenth
            self._log(f"optimising: step {event.step}/{self.total} {self._status(event)}")

    def _log(self, text: str) -> None:
        print(f"protolens {self.command}: {text}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


@contextlib.contextmanager
def progress_bar(total: int, command: str = "generate") -> Iterator[_Bar]:
    """What ``protolens COMMAND`` is doing, on stderr (``_Bar``)."""
    bar = _Bar(total, command)
    try:
        yield bar
    finally:
        bar.close()


def _numbers(text: str, flag: str, kind: Callable[[str], Any]) -> list[Any]:
    from protolens_server.errors import InvalidArgument

    try:
        return [kind(v) for v in text.split(",") if v.strip()]
    except ValueError as exc:
        raise InvalidArgument(flag, f"{text!r}: expected comma-separated numbers") from exc


def _class_names_file(path: str | None) -> list[str] | None:
    if path is None:
        return None
    from protolens_server.models.sidecar import parse_class_names, read_json

    p = Path(path).expanduser()
    if not p.is_file():
        from protolens_server.errors import InvalidArgument

        raise InvalidArgument("--class-names", f"{p}: no such file")
    return list(parse_class_names(read_json(p, "class names"), str(p)).names)


# -- scoring: --reference / --layers / --plots (Engineer SCORES) -------------------------


def _add_scoring_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("scores (path similarity to natural images)")
    g.add_argument(
        "--reference",
        metavar="DIR",
        help="natural images per class, DIR/<class index or name>/*.png|jpg; scores each "
        "prototype against them (every target class needs a folder)",
    )
    g.add_argument(
        "--layers",
        metavar="L1,L2",
        help="layers to compare (module paths; default: every top-level stage or block, "
        "then the logits)",
    )
    g.add_argument(
        "--plots",
        action="store_true",
        help="write a per-layer similarity plot beside each image (NAME-scores.png)",
    )
    g.add_argument(
        "--robustness-samples",
        type=int,
        default=16,
        metavar="N",
        help="random transforms for the robustness score (default: 16)",
    )


def open_cli_reference(args: argparse.Namespace, handle: ModelHandle, targets: list[Target]):
    """The reference set named by --reference, checked to cover every target class (or None)."""
    from protolens_server.errors import InvalidArgument, ReferenceSetError
    from protolens_server.scores.scoring import open_reference

    if args.reference is None:
        for flag, given in (("--plots", args.plots), ("--layers", args.layers)):
            if given:
                raise InvalidArgument(flag, "needs --reference DIR (natural images per class)")
        return None
    if args.robustness_samples < 0:
        raise InvalidArgument("--robustness-samples", "must be >= 0")
    try:
        reference = open_reference(handle, Path(args.reference).expanduser())
        reference.require(sorted({c for t in targets for c in t.classes}), handle.class_names)
    except ReferenceSetError as exc:
        detail = {k: v for k, v in exc.metadata.items() if k != "field"}
        raise ReferenceSetError("--reference", exc.message.partition(": ")[2], **detail) from exc
    return reference


def add_scores(
    args: argparse.Namespace,
    handle: ModelHandle,
    prototypes: Sequence[Prototype],
    reference: ReferenceSet | None,
    device: str,
    paths: Sequence[Path],
) -> list[PrototypeScores]:
    """Score the prototypes (one result per prototype); with --plots draw NAME-scores.png."""
    from protolens_server.scores.scoring import score_prototypes

    layers = [v.strip() for v in args.layers.split(",") if v.strip()] if args.layers else None
    scores = score_prototypes(
        handle,
        prototypes,
        reference,
        layers=layers,
        device=device,
        robustness_samples=args.robustness_samples,
        seed=args.seed,
    )
    if args.plots:
        from protolens_server.plots import plot_scores

        for result, image in zip(scores, paths, strict=True):
            plot_scores(result, image.with_name(f"{image.stem}-scores.png"), title=image.stem)
    return list(scores)
