"""The last step of every loader: freeze, dry-run, check class names, digest -> handle."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable
from typing import Any

import torch

from protolens_server.engine.types import InputSpec
from protolens_server.errors import InvalidArgument, InvalidModel
from protolens_server.models._digest import model_digest
from protolens_server.models._logits import (
    LogitsOnly,
    adapt,
    describe_output,
    flattenable,
    logits_of,
)
from protolens_server.models._probe_output import (
    multi_label_origin,
    output_reading,
    probe_output,
)
from protolens_server.models.handle import (
    MULTI_LABEL,
    ModelFormat,
    ModelHandle,
    generated_class_names,
)
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
    module: Callable[[torch.Tensor], Any], spec: InputSpec, source: str, declared: str = ""
) -> tuple[int, Callable[[torch.Tensor], torch.Tensor]]:
    """Run zeros of the spec's shape through ``module``; return the number of logits and
    the module to use: ``module`` itself, or adapted by ``_logits.adapt`` when it returns
    a dict, a Hugging Face ``ModelOutput``, a tuple or a list holding the logits, has
    weights in another float type, gives (N, C, 1, 1) or (N, 1, C) logits or takes
    (N, H, W, C) images; or read through ``log`` / ``logit`` when it returns
    probabilities (``_probe_output``, which also refuses a model without input
    gradients or with a random output, and probabilities ``declared`` as logits)."""
    shape = (DRY_RUN_BATCH, *spec.shape)
    dtype = weights_dtype(module)
    if dtype is not None:
        module = adapt(module, input_dtype=dtype)
    try:
        with torch.no_grad():
            out = module(torch.zeros(shape))
    except Exception as exc:
        module, out = _retry_channels_last(module, spec, source, exc, dtype)
    if not isinstance(out, torch.Tensor):
        logits = logits_of(out)
        if logits is None or not isinstance(module, torch.nn.Module):
            raise InvalidModel(
                f"{source}: forward returned {describe_output(out)}, expected a logits tensor "
                "of shape (batch, num_classes) (or a dict / ModelOutput with 'logits')"
            )
        out, module = logits, adapt(module)
    if out.shape[:1] == (DRY_RUN_BATCH,) and flattenable(tuple(out.shape)):
        if not isinstance(module, torch.nn.Module):
            raise InvalidModel(f"{source}: output shape {tuple(out.shape)}; return (N, C)")
        out, module = out.flatten(1), adapt(module, flatten=True)
    if out.ndim != 2 or out.shape[0] != DRY_RUN_BATCH:
        raise InvalidModel(
            f"{source}: output shape {tuple(out.shape)} for input {shape}; expected logits "
            f"of shape ({DRY_RUN_BATCH}, num_classes) (or (N, C, 1, 1), (N, 1, C))"
        )
    if out.shape[1] < 2:
        raise InvalidModel(
            f"{source}: outputs {out.shape[1]} logit(s); need >= 2 classes (a one-logit binary "
            "classifier: return torch.cat([torch.zeros_like(z), z], 1) for its logit z)"
        )
    if not torch.isfinite(out).all():
        raise InvalidModel(f"{source}: produced NaN/Inf logits on a zeros input of {shape}")
    return int(out.shape[1]), probe_output(module, spec, source, out, declared)


def weights_dtype(module: Any) -> torch.dtype | None:
    """The one float type of every floating parameter and buffer when it is not float32
    (a model saved after ``.half()``, ``.bfloat16()`` or ``.double()``), else None."""
    if not isinstance(module, torch.nn.Module):
        return None
    tensors = [*module.parameters(), *module.buffers()]
    dtypes = {t.dtype for t in tensors if t.is_floating_point()}
    if len(dtypes) == 1 and torch.float32 not in dtypes:
        return dtypes.pop()
    return None


def _retry_channels_last(
    module: Callable[[torch.Tensor], Any],
    spec: InputSpec,
    source: str,
    exc: Exception,
    dtype: torch.dtype | None,
) -> tuple[Callable[[torch.Tensor], Any], Any]:
    """After the dry forward failed: the model adapted to (N, H, W, C) images and its
    output when it takes those (a converted TensorFlow model), else ``InvalidModel``
    saying why the forward failed."""
    shape = (DRY_RUN_BATCH, *spec.shape)
    if isinstance(module, torch.nn.Module):
        nhwc = adapt(module, channels_last_input=True)
        try:
            with torch.no_grad():
                return nhwc, nhwc(torch.zeros(shape))
        except Exception:
            pass
    if _accepts_batch_one(module, spec):
        raise InvalidModel(
            f"{source}: the model accepts only batch size 1; export it with a dynamic "
            "batch dimension (dynamic_shapes={'x': {0: torch.export.Dim('batch')}}) "
            "or script it"
        ) from exc
    reason = _first_line(exc)
    if _MISSING_ARGUMENT.search(str(exc)):
        fix = (
            "protolens calls forward(x) with one batch of images: give its other "
            "arguments defaults, or save a wrapper whose forward takes only x"
        )
    elif dtype is not None:
        fix = (
            f"its weights are {str(dtype).removeprefix('torch.')} and the input was cast "
            f"to that; if this torch build cannot run it on this device, save it after "
            "model.float()"
        )
    else:
        fix = (
            "set the model's input spec (--input-shape C,H,W, or channels/height/width "
            "in its sidecar JSON)"
        )
    raise InvalidModel(
        f"{source}: forward failed on an input of shape {shape} "
        f"(expected input {spec.channels}x{spec.height}x{spec.width}): {reason}; {fix}"
    ) from exc


# TorchScript, eager Python and torch.export's words for a forward given too few inputs
_MISSING_ARGUMENT = re.compile(
    r"missing value for argument|missing \d+ required (positional|keyword-only) argument"
    r"|Trying to flatten user inputs with exported input tree spec"
    r"|There is no flat args adapter specified"
)


def _accepts_batch_one(module: Callable[[torch.Tensor], Any], spec: InputSpec) -> bool:
    try:
        with torch.no_grad():
            out = module(torch.zeros(1, *spec.shape))
    except Exception:
        return False
    out = logits_of(out)
    return out is not None and out.ndim == 2


def _first_line(exc: BaseException) -> str:
    """The message's first line; for an error raised inside TorchScript code (whose first
    line is "The following operation failed in the TorchScript interpreter."), its
    last line, which names the error."""
    text = [line for line in str(exc).strip().splitlines() if line.strip()]
    if text and text[0].startswith("The following operation failed in the TorchScript"):
        return text[-1].strip()[:300]
    return (text[0] if text else type(exc).__name__)[:300]


def default_class_names(n: int) -> ClassNames:
    return ClassNames(generated_class_names(n), ((),) * n)


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
    output: str = "",
) -> ModelHandle:
    """``output``: the declared output (``sidecar.OUTPUTS``; "" or ``auto``: what the
    load probe recognises)."""
    freeze(module)
    n, module = check_forward(module, spec, source, output)
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
    reading = output_reading(module, output)
    if reading != "logits":
        meta["output"] = reading
    if reading == MULTI_LABEL:
        meta["multi_label"] = multi_label_origin(module)
    if isinstance(module, LogitsOnly):  # what the load adapted, for the model's description
        if module.input_dtype is not None:
            meta["weights_dtype"] = str(module.input_dtype).removeprefix("torch.")
        if module.channels_last_input:
            meta["input_layout"] = "NHWC"
    handle = ModelHandle(
        name=name,
        source=source,
        module=module,
        input_spec=spec,
        class_names=classes.names,
        digest=model_digest(weights_sha256, spec, reading),
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
