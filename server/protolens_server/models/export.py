"""``torch.export`` programs (``torch.export.save``; ``.pt2``): the preferred format.

The handle's module is ``torch.export.unflatten(program)``, which keeps the
original submodule hierarchy so forward hooks on inner layers work (the
scorer needs them); if unflattening fails we fall back to
``program.module()``. The program itself rides along in ``handle.program``.
The file is read by ``_pt2.read_program``, never ``torch.export.load`` (which
unpickles sample inputs and more, and eval()s strings from the file): no pickle
runs, and the graph may call tensor operators only (``_operators``).
Export with a dynamic batch dimension, e.g.
``dynamic_shapes={"x": {0: torch.export.Dim("batch")}}``, so prototypes batch.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from protolens_server.engine.types import InputSpec
from protolens_server.errors import InvalidModel
from protolens_server.models import _pt2
from protolens_server.models._build import build_handle
from protolens_server.models._digest import file_sha256
from protolens_server.models._files import existing_file, merge_metadata, not_a_model_hint, sniff
from protolens_server.models.handle import ModelHandle
from protolens_server.models.sidecar import Sidecar, find_sidecar


def load(
    path: str | Path,
    *,
    spec: InputSpec | None = None,
    class_names: Sequence[str] | None = None,
    device: str = "cpu",
    name: str | None = None,
    output: str | None = None,
) -> ModelHandle:
    p = existing_file(path)
    meta = merge_metadata(spec, class_names, find_sidecar(p), output=output)
    program = read_program(p, str(p))
    return handle_for(program, name or p.stem, f"export:{p}", file_sha256(p), meta, device)


def read_program(source: Path | bytes, origin: str) -> torch.export.ExportedProgram:
    kind = sniff(source)
    if kind != "exported":
        hint = not_a_model_hint(kind, source)
        raise InvalidModel(f"{origin}: not a torch.export .pt2 program{hint}")
    return _pt2.read_program(source, origin)


def handle_for(
    program: torch.export.ExportedProgram,
    name: str,
    source: str,
    sha256: str,
    meta: Sidecar,
    device: str,
    metadata: dict[str, str] | None = None,
) -> ModelHandle:
    from_program = _spec_from_program(program)
    spec = meta.input_spec or from_program
    if meta.input_spec is not None and from_program is not None and not meta.gives_shape:
        # the sidecar gives mean/std only: the shape is the program's
        given = meta.input_spec
        spec = InputSpec(
            from_program.channels, from_program.height, from_program.width, given.mean, given.std
        )
    return build_handle(
        name=name,
        source=source,
        module=module_of(program),
        fmt="exported",
        weights_sha256=sha256,
        spec=spec or InputSpec(),
        classes=meta.classes,
        device=device,
        description=meta.description,
        output=meta.output,
        metadata={
            "input_spec": "given" if meta.input_spec else ("program" if spec else "default"),
            **(metadata or {}),
        },
        program=program,
        classes_origin=meta.origin or "class names",
    )


def module_of(program: torch.export.ExportedProgram) -> Any:
    try:
        with warnings.catch_warnings():  # torch's own pytree deprecation noise
            warnings.simplefilter("ignore", FutureWarning)
            return torch.export.unflatten(program)
    except Exception:  # some programs (e.g. with preserved-module calls) do not unflatten
        return program.module(check_guards=False)  # guards are Python source: never compiled


CHANNELS_LAST_CHANNELS = (1, 3, 4)


def _spec_from_program(program: torch.export.ExportedProgram) -> InputSpec | None:
    """C, H, W of the program's single image input when they are static; a (N, H, W, C)
    input (a converted TensorFlow model: C of 1, 3 or 4 last, H and W larger) gives its
    C, H, W too, and the load adapts the model to it (``_build.check_forward``)."""
    inputs = program.graph_signature.user_inputs
    if len(inputs) != 1:
        return None
    for node in program.graph.nodes:
        if node.op == "placeholder" and node.name == inputs[0]:
            val = node.meta.get("val")
            shape = tuple(getattr(val, "shape", ()))
            if len(shape) != 4 or not all(isinstance(d, int) for d in shape[1:]):
                return None
            c, h, w = (int(d) for d in shape[1:])
            if w in CHANNELS_LAST_CHANNELS and c > max(CHANNELS_LAST_CHANNELS):
                c, h, w = w, c, h
            if c == 3:
                return InputSpec(c, h, w)
            return InputSpec(c, h, w, mean=(0.0,), std=(1.0,))
    return None
