"""One forward pass of the model on [0,1] images, with the speed settings applied.

The model's preprocessing (``input_spec.normalise``) runs inside the
differentiable graph. With ``config.channels_last`` an eager module and its
inputs use the channels_last memory format (same numbers; about 10% faster per
step on this CPU too; the module is converted in place, which changes no
result). ``config.autocast`` runs the forward under bf16 autocast on CUDA only:
CPU bf16 is slower than fp32 on most CPUs and would change CPU results. With
autocast the runner uses a copy whose convolution and linear weights are bf16
already (``_precision.py``), so autocast does not re-cast the frozen fp32 weights
on every forward (the same numbers: autocast would round them the same way).

``compile=True`` (an execution option of ``generate``, not a config field: it
changes no result beyond float rounding, so it stays out of the cache key) runs
the optimisation step's forward through ``torch.compile``. Compilation is lazy
and dynamo keeps its compiled code per forward function, so later chunks and
later calls of the same model class reuse it (a new batch size compiles once
more, then a batch-size-generic graph). If compiling fails (e.g. no C compiler)
the step reruns eagerly, a ``RuntimeWarning`` says why, and the module is not
compiled again in this process. The first step of a call runs eagerly, so the
channels_last layout check never mistakes a compile error for a layout error;
the baseline and the final evaluation stay eager too (few, differently shaped
forwards that would each cost a compilation).
"""

from __future__ import annotations

import contextlib
import warnings
import weakref
from collections.abc import Callable

import torch
from torch import nn

from protolens_server.errors import InvalidModel, ProtolensError

from ._fold import folded
from ._precision import cast_frozen
from ._readout import is_multi_label
from .types import GenerationConfig, ImageClassifier

# Device types whose forward runs under bf16 autocast when ``config.autocast`` is set.
AUTOCAST_DEVICES = frozenset({"cuda"})
# Modules whose compilation failed in this process: they run eagerly from then on.
_compile_failed: weakref.WeakSet[nn.Module] = weakref.WeakSet()


def compilable(module: object) -> bool:
    """``torch.compile`` applies to eager modules (TorchScript runs as it is)."""
    return isinstance(module, nn.Module) and not isinstance(module, torch.jit.ScriptModule)


class ModelRunner:
    """Holds the model, its spec and the resolved speed flags for one ``generate`` call."""

    def __init__(
        self,
        model: ImageClassifier,
        config: GenerationConfig,
        device: torch.device,
        *,
        compile: bool = False,
        fold_batchnorm: bool = False,
    ) -> None:
        # A folded copy (BatchNorm folded into the convolutions, _fold.py) when asked and
        # possible, with its weights cast to bf16 once under autocast (_precision.py);
        # the caller's module is never changed by either.
        self.source = model.module
        self.device = device
        self.autocast = config.autocast and device.type in AUTOCAST_DEVICES
        module = folded(model.module) if fold_batchnorm else model.module
        self.module = cast_frozen(module, torch.bfloat16) if self.autocast else module
        self.spec = model.input_spec
        self.num_classes = model.num_classes
        self.multi_label = is_multi_label(model)  # one sigmoid per class (``_readout``)
        self.channels_last = config.channels_last and compilable(self.module)
        self._layout_checked = False
        self._affine_cache_key: tuple[torch.device, torch.dtype] | None = None
        self._affine_cache: tuple[torch.Tensor, torch.Tensor]
        if isinstance(self.module, nn.Module):
            self.module.to(device)
            if self.channels_last:
                self.module.to(memory_format=torch.channels_last)
        self._compiled: Callable[[torch.Tensor], torch.Tensor] | None = None
        failed = self.module in _compile_failed or (
            isinstance(self.source, nn.Module) and self.source in _compile_failed
        )
        if compile and compilable(self.module) and not failed:
            self._compiled = torch.compile(self.module)

    @property
    def compiled(self) -> bool:
        """Whether the step's forward runs through ``torch.compile`` (now)."""
        return self._compiled is not None

    def compile_failed(self, error: BaseException) -> bool:
        """After ``error`` escaped a step: if it may come from compilation, switch this
        module to eager for good, warn, and return True (the caller reruns the step).

        Out-of-memory and the engine's own errors are never compile failures. Any other
        error is treated as one: an error of the model itself recurs in the eager rerun.
        """
        if self._compiled is None or isinstance(error, (torch.OutOfMemoryError, ProtolensError)):
            return False
        self._compiled = None
        _compile_failed.add(self.module)  # type: ignore[arg-type]
        if isinstance(self.source, nn.Module):  # and the model it was folded from
            _compile_failed.add(self.source)
        first_line = (str(error).strip().splitlines() or [""])[0][:300]
        warnings.warn(
            f"torch.compile failed ({type(error).__name__}: {first_line}); "
            "running the model eagerly",
            RuntimeWarning,
            stacklevel=2,
        )
        return True

    def autocast_context(self) -> contextlib.AbstractContextManager[None]:
        if self.autocast:
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def normalise(self, images01: torch.Tensor) -> torch.Tensor:
        """[0,1] images -> the model's input space, as one fused multiply-add."""
        scale, shift = self._affine(images01)
        return torch.addcmul(shift, images01, scale)

    def _affine(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        key = (like.device, like.dtype)
        if self._affine_cache_key != key:
            c = self.spec.channels
            mean = torch.tensor(self.spec.mean, dtype=torch.float64).expand(c)
            std = torch.tensor(self.spec.std, dtype=torch.float64).expand(c)
            scale = (1 / std).view(1, c, 1, 1).to(like.device, like.dtype)
            shift = (-mean / std).view(1, c, 1, 1).to(like.device, like.dtype)
            self._affine_cache = (scale, shift)
            self._affine_cache_key = key
        return self._affine_cache

    def logits(self, images01: torch.Tensor) -> torch.Tensor:
        """(N, K) float32 logits of a batch of [0,1] images (differentiable, eager)."""
        return self.forward(self.normalise(images01), compiled=False)

    def forward(self, inputs: torch.Tensor, *, compiled: bool = True) -> torch.Tensor:
        """(N, K) float32 logits of a batch already in the model's input space.

        ``compiled``: through ``torch.compile`` when this runner compiles (the step's
        forward); the first forward of a runner is always eager (the layout check).
        """
        if not self._layout_checked:
            self._layout_checked = True
            if self.channels_last:
                try:
                    return self._forward(inputs, self.module)
                except torch.OutOfMemoryError:
                    raise
                except RuntimeError:
                    # e.g. ``x.view(n, -1)`` inside the model: it needs contiguous tensors
                    self.channels_last = False
                    self.module.to(memory_format=torch.contiguous_format)  # type: ignore[union-attr]
            return self._forward(inputs, self.module)
        module = self._compiled if compiled and self._compiled is not None else self.module
        return self._forward(inputs, module)

    def _forward(
        self, x: torch.Tensor, module: Callable[[torch.Tensor], torch.Tensor]
    ) -> torch.Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with self.autocast_context():
            out = module(x)
        if not isinstance(out, torch.Tensor) or out.shape != (x.shape[0], self.num_classes):
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise InvalidModel(
                f"model returned {shape} for a batch of {x.shape[0]} images; "
                f"expected logits of shape (N, {self.num_classes}): check the model's "
                "output and its number of classes"
            )
        return out.float()
