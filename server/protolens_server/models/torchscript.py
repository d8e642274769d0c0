"""TorchScript files (``torch.jit.save``; ``.pt``/``.ts``).

TorchScript runs in its own interpreter, not arbitrary Python, and torch's C++
unpickler for ``data.pkl``/``constants.pkl`` knows no Python globals. What it can
still do - write files with ``torch.save`` (also from a ``__setstate__`` that
``torch.jit.load`` runs), read them with ``torch.from_file``, call RPC - is refused:
the archive's ``code/`` is scanned before loading and the inlined ``forward`` graph
after (``_operators``). Inner layers are not reachable by hooks
(``format="torchscript"``).
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch

from protolens_server.engine.types import InputSpec
from protolens_server.errors import InvalidModel
from protolens_server.models._build import build_handle
from protolens_server.models._digest import file_sha256
from protolens_server.models._files import existing_file, merge_metadata, not_a_model_hint, sniff
from protolens_server.models._operators import check_script_module, check_script_source
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
    module = read_torchscript(p, str(p))
    return handle_for(module, name or p.stem, f"torchscript:{p}", file_sha256(p), meta, device)


def read_torchscript(source: Path | bytes, origin: str) -> torch.jit.ScriptModule:
    check_script_source(source, origin)  # before load: torch.jit.load runs __setstate__
    try:
        f = io.BytesIO(source) if isinstance(source, bytes) else str(source)
        with warnings.catch_warnings():  # "torch.jit is deprecated": we know (DESIGN.md)
            warnings.simplefilter("ignore", DeprecationWarning)
            module = torch.jit.load(f, map_location="cpu")
    except Exception as exc:  # torch raises RuntimeError/ValueError/pickle errors alike
        hint = not_a_model_hint(sniff(source), source)
        raise InvalidModel(f"{origin}: not a TorchScript file{hint}") from exc
    check_script_module(module, origin)
    return module


def handle_for(
    module: torch.jit.ScriptModule,
    name: str,
    source: str,
    sha256: str,
    meta: Sidecar,
    device: str,
    metadata: dict[str, str] | None = None,
) -> ModelHandle:
    """Handle for a TorchScript module; spec defaults to ImageNet 3x224x224."""
    return build_handle(
        name=name,
        source=source,
        module=module,
        fmt="torchscript",
        weights_sha256=sha256,
        spec=meta.input_spec or InputSpec(),
        classes=meta.classes,
        device=device,
        description=meta.description,
        output=meta.output,
        metadata={
            "input_spec": "given" if meta.input_spec else "default (ImageNet 3x224x224)",
            **(metadata or {}),
        },
        classes_origin=meta.origin or "class names",
    )
