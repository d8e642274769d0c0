"""The last step of every loader: freeze, dry-run, check class names, digest -> handle."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import torch

from protolens_server.engine.types import InputSpec
from protolens_server.errors import InvalidArgument, InvalidModel
from protolens_server.models._digest import model_digest
from protolens_server.models._logits import LogitsOnly, describe_output, logits_of
from protolens_server.models._probe_output import LogProbabilities, probe_output
from protolens_server.models.handle import ModelFormat, ModelHandle
from protolens_server.models.sidecar import ClassNames

DRY_RUN_BATCH = 2  # > 1 so a model that only takes batch 1 is caught at load, not mid-job


def freeze(module: Any) -> None:
    """Eval mode, no parameter gradients (the engine needs input gradients only)."""
    if isinstance(module, torch.nn.Module):
        # torch.export GraphModules refuse eval(); they are traced in eval mode anyway.
        with contextlib.suppress(NotImplementedError):
            module.eval()
        for param in module.parameters():  # ScriptModules refuse module.requires_grad_()
            param.requires_grad_(False)


def check_forward(
    module: Callable[[torch.Tensor], Any], spec: InputSpec, source: str
) -> tuple[int, Callable[[torch.Tensor], torch.Tensor]]:
    """Run zeros of the spec's shape through ``module``; return the number of logits and
    the module to use: ``module`` itself, or wrapped in ``LogitsOnly`` when it returns a
    dict, a Hugging Face ``ModelOutput`` or a tuple holding the logits, or in
    ``LogProbabilities`` when it returns probabilities (``_probe_output``, which also
    refuses a model without input gradients or with a random output)."""
    shape = (DRY_RUN_BATCH, *spec.shape)
    fix = (
        "set the model's input spec (--input-shape C,H,W, or channels/height/width "
        "in its sidecar JSON)"
    )
    try:
        with torch.no_grad():
            out = module(torch.zeros(shape))
    except Exception as exc:
        if _accepts_batch_one(module, spec):
            raise InvalidModel(
                f"{source}: the model accepts only batch size 1; export it with a dynamic "
                "batch dimension (dynamic_shapes={'x': {0: torch.export.Dim('batch')}}) "
                "or script it"
            ) from exc
        raise InvalidModel(
            f"{source}: forward failed on an input of shape {shape} "
            f"(expected input {spec.channels}x{spec.height}x{spec.width}): "
            f"{_first_line(exc)}; {fix}"
        ) from exc
    if not isinstance(out, torch.Tensor):
        logits = logits_of(out)
        if logits is None or not isinstance(module, torch.nn.Module):
            raise InvalidModel(
                f"{source}: forward returned {describe_output(out)}, expected a logits tensor "
                "of shape (batch, num_classes) (or a dict / ModelOutput with 'logits')"
            )
        out, module = logits, LogitsOnly(module)
    if out.ndim != 2 or out.shape[0] != DRY_RUN_BATCH:
        raise InvalidModel(
            f"{source}: output shape {tuple(out.shape)} for input {shape}; expected logits "
            f"of shape ({DRY_RUN_BATCH}, num_classes)"
        )
    if out.shape[1] < 2:
        raise InvalidModel(
            f"{source}: outputs {out.shape[1]} logit(s); need >= 2 classes (a one-logit binary "
            "classifier: return torch.cat([torch.zeros_like(z), z], 1) for its logit z)"
        )
    if not torch.isfinite(out).all():
        raise InvalidModel(f"{source}: produced NaN/Inf logits on a zeros input of {shape}")
    return int(out.shape[1]), probe_output(module, spec, source, out)


def _accepts_batch_one(module: Callable[[torch.Tensor], Any], spec: InputSpec) -> bool:
    try:
        with torch.no_grad():
            out = module(torch.zeros(1, *spec.shape))
    except Exception:
        return False
    out = logits_of(out)
    return out is not None and out.ndim == 2


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]


def default_class_names(n: int) -> ClassNames:
    return ClassNames(tuple(f"class {i}" for i in range(n)), ((),) * n)


def build_handle(
    *,
    name: str,
    source: str,
    module: Callable[[torch.Tensor], torch.Tensor],
    fmt: ModelFormat,
    weights_sha256: str,
    spec: InputSpec,
    classes: ClassNames | None,
    device: str = "cpu",
    description: str = "",
    metadata: dict[str, str] | None = None,
    program: Any = None,
    classes_origin: str = "class names",
) -> ModelHandle:
    freeze(module)
    n, module = check_forward(module, spec, source)
    freeze(module)  # a LogitsOnly wrapper made by check_forward
    if classes is None:
        classes = default_class_names(n)
    elif len(classes.names) != n:
        raise InvalidArgument(
            f"{source}: {classes_origin}",
            f"has {len(classes.names)} class names but the model outputs {n} logits; "
            "give exactly one name per output",
        )
    meta = {"weights_sha256": weights_sha256, **(metadata or {})}
    output = "log-probabilities" if isinstance(module, LogProbabilities) else "logits"
    if output != "logits":
        meta["output"] = output
    handle = ModelHandle(
        name=name,
        source=source,
        module=module,
        input_spec=spec,
        class_names=classes.names,
        digest=model_digest(weights_sha256, spec, output),
        format=fmt,
        description=description,
        metadata=meta,
        class_aliases=classes.aliases,
        program=program,
    )
    return move_to(handle, device)


def move_to(handle: ModelHandle, device: str) -> ModelHandle:
    if torch.device(device).type == "cpu":
        return handle
    if torch.device(device).type == "cuda" and not torch.cuda.is_available():
        raise InvalidArgument("device", f"{device!r}: CUDA is not available here; use cpu")
    try:
        return handle.to(device)
    except (RuntimeError, ValueError) as exc:
        raise InvalidArgument("device", f"cannot move the model to {device!r}: {exc}") from exc
