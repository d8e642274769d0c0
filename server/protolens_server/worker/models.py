"""Recently used models, kept loaded on the worker's device within a byte budget."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING

from protolens_server import metrics
from protolens_server.errors import InvalidArgument
from protolens_server.heap import freeze_heap
from protolens_server.models.handle import ModelHandle

if TYPE_CHECKING:
    import torch


def parameter_bytes(module: object) -> int:
    """Bytes of a module's parameters and buffers (0 for a plain callable)."""
    if not hasattr(module, "parameters"):
        return 0
    tensors = [*module.parameters(), *getattr(module, "buffers", list)()]
    return sum(t.numel() * t.element_size() for t in tensors)


def resident_bytes(module: Callable[[torch.Tensor], torch.Tensor]) -> int:
    """What a loaded model keeps in memory while the engine uses it: its own parameters
    and buffers, plus the BatchNorm-folded copy the engine runs (``engine.fold_batchnorm``,
    memoised per module), made here at load time so the budget counts it."""
    from protolens_server.engine import fold_batchnorm

    fast = fold_batchnorm(module)
    return parameter_bytes(module) + (parameter_bytes(fast) if fast is not module else 0)


class ModelCache:
    """An LRU of loaded handles keyed by (name, digest), bounded by resident bytes.

    The most recent model always stays, even over budget: a worker must be able
    to run the job it holds. ``loader(name)`` is ``ModelCatalog.load`` bound to a
    device: it loads only a model whose inspection (a child process under limits) found
    it READY, with the loaders of ``models/`` that never unpickle untrusted data
    (docs/models.md, "Trust model"). Thread-safe: loads happen in the engine thread.
    """

    def __init__(self, loader: Callable[[str], ModelHandle], budget_bytes: int) -> None:
        self.loader = loader
        self.budget_bytes = budget_bytes
        self._handles: OrderedDict[str, tuple[ModelHandle, int]] = OrderedDict()
        self._lock = threading.Lock()

    def holds(self, name: str, digest: str = "") -> bool:
        """Whether ``get(name, digest)`` would answer without loading."""
        with self._lock:
            return any(
                key == f"{name}\0{digest}" or (not digest and key.startswith(f"{name}\0"))
                for key in self._handles
            )

    def get(self, name: str, digest: str = "") -> ModelHandle:
        """The handle for ``name``; InvalidArgument if its digest is not ``digest``."""
        with self._lock:
            for key in reversed(self._handles):
                if key == f"{name}\0{digest}" or (not digest and key.startswith(f"{name}\0")):
                    self._handles.move_to_end(key)
                    return self._handles[key][0]
            handle = self.loader(name)
            if digest and handle.digest != digest:
                raise InvalidArgument(
                    "model",
                    f"model {name!r} changed since the job was submitted (digest "
                    f"{digest[:12]} -> {handle.digest[:12]}); submit the job again",
                )
            key = f"{name}\0{handle.digest}"
            self._handles[key] = (handle, resident_bytes(handle.module))
            self._handles.move_to_end(key)
            while len(self._handles) > 1 and self.loaded_bytes > self.budget_bytes:
                self._handles.popitem(last=False)
            metrics.MODELS_LOADED.set(len(self._handles))
            freeze_heap()  # a loaded model is long-lived: out of full GC passes (heap.py)
            return handle

    @property
    def loaded_bytes(self) -> int:
        return sum(b for _, b in self._handles.values())

    def __len__(self) -> int:
        return len(self._handles)
