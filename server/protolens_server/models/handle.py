"""``ModelHandle``: what every model source produces and every other layer consumes."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from protolens_server.engine.types import InputSpec

ModelFormat = Literal["eager", "torchscript", "exported"]
# ``metadata["output"]`` of a multi-label model: its module returns one independent
# logit per label (a sigmoid output read through the logit function, or logits
# declared ``multi-label-logits``); the engine then reads each label's own sigmoid.
MULTI_LABEL = "multi-label"


def generated_class_names(n: int) -> tuple[str, ...]:
    """What a model that came without class names calls its ``n`` classes."""
    return tuple(f"class {i}" for i in range(n))


@dataclass(frozen=True)
class ModelHandle:
    """A loaded, frozen classifier ready for the engine.

    ``module`` maps a batch already normalised by ``input_spec`` to logits; its
    parameters have ``requires_grad=False`` and it is in eval mode. ``format``
    tells the scorer how it can reach inner layers (hooks on eager modules, the
    graph of an exported program, nothing for TorchScript). ``digest`` is the
    sha256 of the weights or file and keys every cache entry (models/_digest.py:
    it covers the weights and the input spec, since both determine outputs).
    """

    name: str
    source: str  # e.g. "builtin:efficientnet_lite0", "torchscript:/store/m.pt"
    module: Callable[[torch.Tensor], torch.Tensor]
    input_spec: InputSpec
    class_names: tuple[str, ...]
    digest: str
    format: ModelFormat = "eager"
    description: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    # Other names each class answers to (same order as ``class_names``; may be
    # empty): ImageNet synonyms, TorchServe ids. Used by ``models.resolve_class``.
    class_aliases: tuple[tuple[str, ...], ...] = ()
    # The ``torch.export.ExportedProgram`` behind an "exported" handle (its graph
    # and signature), or None.
    program: Any = None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def given_class_names(self) -> tuple[str, ...]:
        """The class names the model came with (a sidecar, a config, a label file); ()
        when it came with none and its names are the generated ``class i``."""
        if self.class_names == generated_class_names(len(self.class_names)):
            return ()
        return self.class_names

    @property
    def multi_label(self) -> bool:
        """One independent sigmoid per class (``engine.ImageClassifier.multi_label``)."""
        return self.metadata.get("output") == MULTI_LABEL

    def to(self, device: str | torch.device) -> ModelHandle:
        """The same handle with its module moved to ``device`` (modules move in place)."""
        mod = self.module
        if isinstance(mod, torch.nn.Module | torch.jit.ScriptModule):
            mod.to(device)
        return self
