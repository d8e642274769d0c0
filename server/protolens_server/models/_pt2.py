"""Reading a ``torch.export`` ``.pt2`` archive without running anything in it.

``torch.export.load`` (torch 2.13) runs code from the file in several places:

- sample inputs: ``deserialize_torch_artifact`` retries a failed ``weights_only`` load
  with ``weights_only=False`` (an arbitrary pickle);
- weights and tensor constants flagged ``use_pickle``, and a legacy
  ``data/weights/<model>.pt`` / ``data/constants/<model>.pt``: unrestricted ``torch.load``;
- opaque constants: ``pickle.loads``; torchbind constants: torch's object unpickler;
- symbolic sizes: ``sympy.sympify`` of strings from the program, which ``eval()``s them;
- ``guards_code``: Python source strings ``ep.module()`` compiles with ``exec``;
- AOTInductor members: shared objects ``dlopen()``-ed from the archive;
- every program in the archive is deserialised, not only the one asked for.

``read_program`` rebuilds the program from torch's own building blocks instead:
one program (``models/model.json``), sample inputs never unpickled (their opcodes
are scanned, ``_pickle_scan``: a payload there marks the file hostile), weights and tensor
constants from raw bytes (a pickled one only through ``torch.load(weights_only=True)``),
other constants and compiled code refused, every symbolic size checked before sympy
sees it (``_sym_expr``), guards dropped, and every operator the graph calls checked
against an allow-list (``_operators``). It uses torch's private archive helpers; the
tests in tests/models/test_models_hostile.py pin the behaviour on the installed torch.
"""

from __future__ import annotations

import io
import json
import threading
import warnings
from pathlib import Path
from typing import Any

import torch

from protolens_server.errors import InvalidModel
from protolens_server.models._operators import check_graph_module
from protolens_server.models._pickle_scan import check_plain_tensors
from protolens_server.models._sym_expr import check_sym_expr, expr_strings

MODEL = "model"  # the program torch.export.save writes (archive member models/model.json)
_REFUSED_DIRS = {
    "data/aotinductor/": "AOTInductor compiled code (shared objects torch would load)",
    "data/executorch/": "an ExecuTorch program",
    "data/mtia": "MTIA compiled code",
    "xl_model_weights/": "externally stored weights",
}
_RESAVE = "save the model with torch.export.save (torch >= 2.7) from plain tensors"
# torch keeps its current deserializer in a module global: one load at a time per process.
_LOAD_LOCK = threading.Lock()


def read_program(source: Path | bytes, origin: str) -> torch.export.ExportedProgram:
    """The single program of a ``.pt2`` archive, read without unpickling or eval."""
    from torch.export.pt2_archive._package import PT2ArchiveReader

    try:
        reader = PT2ArchiveReader(io.BytesIO(source) if isinstance(source, bytes) else str(source))
        names = set(reader.get_file_names())
        version = reader.read_string("archive_version") if "archive_version" in names else "?"
    except Exception as exc:  # not a zip, not a pt2 archive
        raise InvalidModel(f"{origin}: not a torch.export .pt2 archive") from exc
    if version != "0":
        raise InvalidModel(f"{origin}: .pt2 archive version {version!r} is unsupported; {_RESAVE}")
    _refuse_members(names, origin)
    sample_inputs = f"data/sample_inputs/{MODEL}.pt"
    if sample_inputs in names:  # never unpickled; a payload there marks the file hostile
        check_plain_tensors(reader.read_bytes(sample_inputs), sample_inputs, origin)
    program_json = _program_json(reader, origin)
    for expr in expr_strings(program_json):
        check_sym_expr(expr, origin)
    with _LOAD_LOCK, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's pytree deprecation noise
        state_dict = _tensors(reader, names, "weights", origin)
        constants = _tensors(reader, names, "constants", origin)
        program = _deserialize(program_json, state_dict, constants, origin)
    program._guards_code = []  # Python source from the file: never compiled
    check_graph_module(program.graph_module, origin)
    return program


def _refuse_members(names: set[str], origin: str) -> None:
    for prefix, what in _REFUSED_DIRS.items():
        if any(n.startswith(prefix) for n in names):
            raise InvalidModel(f"{origin}: refused: the archive holds {what}; {_RESAVE}")
    programs = sorted(n for n in names if n.startswith("models/") and n.endswith(".json"))
    if programs != [f"models/{MODEL}.json"]:
        listed = ", ".join(programs) or "none"
        raise InvalidModel(
            f"{origin}: a .pt2 for protolens holds exactly one program, models/{MODEL}.json "
            f"(found: {listed}); {_RESAVE}"
        )
    for legacy in (f"data/weights/{MODEL}.pt", f"data/constants/{MODEL}.pt"):
        if legacy in names:
            raise InvalidModel(
                f"{origin}: refused: {legacy} is a legacy pickled payload; {_RESAVE}"
            )


def _program_json(reader: Any, origin: str) -> Any:
    try:
        return json.loads(reader.read_bytes(f"models/{MODEL}.json"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise InvalidModel(f"{origin}: models/{MODEL}.json is not valid JSON") from exc


def _tensors(reader: Any, names: set[str], kind: str, origin: str) -> dict[str, torch.Tensor]:
    """Weights (``kind="weights"``) or constants, rebuilt from raw tensor bytes."""
    from torch._export.serde.serialize import (
        deserialize_size,
        deserialize_storage_offset,
        deserialize_stride,
    )
    from torch.export.pt2_archive._package import _build_file_map, _load_payload_config

    config_name = f"data/{kind}/{MODEL}_{kind}_config.json"
    if config_name not in names:
        if kind == "constants":
            return {}
        raise InvalidModel(f"{origin}: the archive has no {config_name}; {_RESAVE}")
    base = f"data/{kind}/"
    try:
        config = _load_payload_config(reader, config_name)
        flat = _build_file_map(reader, _without_pickled(config), base)
    except InvalidModel:
        raise
    except Exception as exc:
        raise InvalidModel(f"{origin}: {config_name} does not describe its tensors: {exc}") from exc
    out: dict[str, torch.Tensor] = {}
    for fqn, meta in config.config.items():
        if kind == "constants" and not meta.path_name.startswith("tensor_"):
            what = "a pickled Python object" if "opaque" in meta.path_name else "a torchbind object"
            raise InvalidModel(
                f"{origin}: refused: constant {fqn!r} is {what}; protolens loads tensor "
                f"programs only; {_RESAVE}"
            )
        if meta.use_pickle:
            out[fqn] = _weights_only_tensor(reader.read_bytes(base + meta.path_name), fqn, origin)
            continue
        tm = meta.tensor_meta
        if tm is None:
            raise InvalidModel(f"{origin}: {kind} entry {fqn!r} has no tensor metadata")
        try:
            tensor = torch.as_strided(
                flat[meta.path_name],
                deserialize_size(tm.sizes),
                deserialize_stride(tm.strides),
                deserialize_storage_offset(tm.storage_offset),
            )
        except Exception as exc:
            raise InvalidModel(f"{origin}: {kind} entry {fqn!r} does not fit its bytes") from exc
        is_param = kind == "weights" and meta.is_param
        out[fqn] = torch.nn.Parameter(tensor, tm.requires_grad) if is_param else tensor
    return out


def _without_pickled(config: Any) -> Any:
    import copy

    raw = copy.copy(config)
    raw.config = {k: v for k, v in config.config.items() if not v.use_pickle}
    return raw


def _weights_only_tensor(data: bytes, fqn: str, origin: str) -> torch.Tensor:
    try:
        value = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise InvalidModel(
            f"{origin}: refused: tensor {fqn!r} is a pickle that is not plain tensor data "
            f"(weights_only loading refused it); {_RESAVE}"
        ) from exc
    if not isinstance(value, torch.Tensor):
        raise InvalidModel(f"{origin}: tensor {fqn!r} holds {type(value).__name__}, not a tensor")
    return value


def _deserialize(
    program_json: Any, state_dict: dict[str, Any], constants: dict[str, Any], origin: str
) -> torch.export.ExportedProgram:
    from torch._export.serde import schema
    from torch._export.serde.serialize import ExportedProgramDeserializer, _dict_to_dataclass

    try:
        serialized = _dict_to_dataclass(schema.ExportedProgram, program_json)
        # b"": no sample inputs (torch would unpickle them, with a weights_only=False retry)
        return ExportedProgramDeserializer().deserialize(serialized, state_dict, constants, b"")
    except InvalidModel:
        raise
    except Exception as exc:  # schema, version and verifier errors alike
        text = str(exc).strip().splitlines()
        first = (text[0] if text else type(exc).__name__)[:300]
        raise InvalidModel(f"{origin}: not a loadable torch.export program: {first}") from exc
