"""Hostile model files for the safety tests (importable as ``hostile_models``).

Every builder takes a real, working model file and hides a payload in it that, if
it ever runs, writes ``marker``. A test passes a fresh marker path and asserts
that the file does not exist after the service listed, described, refused and
(in the worker) tried to load the model. What each vector abuses is said beside
it; torch 2.13's own loaders run every one of the pickle and sympy payloads
(``test_models_hostile.py::test_torch_itself_runs_the_payloads`` keeps that true,
so these builders stay real attacks and not strings that happen to fail).
"""

from __future__ import annotations

import builtins
import io
import json
import pickle
import re
import zipfile
from collections.abc import Callable
from pathlib import Path

import torch


class _Exec:
    """Pickles as a call to ``exec(code)``: what unrestricted unpickling runs."""

    def __init__(self, code: str) -> None:
        self.code = code

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (builtins.exec, (self.code,))


def payload_code(marker: Path) -> str:
    return f"open({str(marker)!r}, 'w').write('payload ran')"


def torch_pickle(marker: Path, legacy: bool = False) -> bytes:
    """A ``torch.save`` file (zip, or the legacy format) whose unpickling runs the payload."""
    buf = io.BytesIO()
    torch.save(
        {"weight": _Exec(payload_code(marker))},
        buf,
        _use_new_zipfile_serialization=not legacy,
    )
    return buf.getvalue()


def plain_pickle(marker: Path) -> bytes:
    return pickle.dumps(_Exec(payload_code(marker)), protocol=2)


Members = dict[str, bytes]


def rewrite(src: Path, dst: Path, edit: Callable[[Members], None]) -> Path:
    """Copy the torch zip ``src`` to ``dst`` with ``edit`` applied to its members
    (names without the archive's top folder)."""
    with zipfile.ZipFile(src) as zf:
        names = zf.namelist()
        root = names[0].split("/", 1)[0] + "/"
        members = {n[len(root) :]: zf.read(n) for n in names}
    edit(members)
    with zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as out:
        for name, data in members.items():
            out.writestr(root + name, data)
    return dst


# --- torch.export .pt2 ----------------------------------------------------------------


def _sample_inputs(marker: Path) -> Callable[[Members], None]:
    # torch: deserialize_torch_artifact retries a failed weights_only load with
    # weights_only=False (the vector of issue 14).
    def edit(m: Members) -> None:
        m["data/sample_inputs/model.pt"] = torch_pickle(marker)

    return edit


def _pickled_weight(marker: Path) -> Callable[[Members], None]:
    # torch: _load_state_dict loads "use_pickle" weights with weights_only=False.
    def edit(m: Members) -> None:
        name = "data/weights/model_weights_config.json"
        config = json.loads(m[name])
        first = next(iter(config["config"].values()))
        first["use_pickle"] = True
        m[name] = json.dumps(config).encode()
        m["data/weights/" + first["path_name"]] = torch_pickle(marker)

    return edit


def _constant(marker: Path, path_name: str, data: bytes) -> Callable[[Members], None]:
    def edit(m: Members) -> None:
        entry = {"path_name": path_name, "is_param": False, "use_pickle": True}
        config = {"config": {"hidden": {**entry, "tensor_meta": None}}}
        m["data/constants/model_constants_config.json"] = json.dumps(config).encode()
        m["data/constants/" + path_name] = data

    return edit


def _legacy(member: str, marker: Path) -> Callable[[Members], None]:
    # torch: a legacy data/weights/<model>.pt (or constants) goes through
    # deserialize_torch_artifact and its weights_only=False retry.
    def edit(m: Members) -> None:
        m[member] = torch_pickle(marker)

    return edit


def _sympy_expr(marker: Path) -> Callable[[Members], None]:
    # torch: symbolic sizes are parsed with sympy.sympify, which eval()s its string.
    def edit(m: Members) -> None:
        text = m["models/model.json"].decode()
        evil = f"__import__('builtins').exec({payload_code(marker)!r})"
        new, n = re.subn(r'"expr_str": "[^"]*"', json.dumps({"expr_str": evil})[1:-1], text)
        assert n, "the program has no symbolic size to poison (export it with a dynamic batch)"
        m["models/model.json"] = new.encode()

    return edit


def _python_call(marker: Path) -> Callable[[Members], None]:
    # torch: a node target "torch.<anything>" resolves by getattr to any callable
    # reachable from the torch module (torch.os.mkdir here); torch's verifier refuses it
    # today, protolens refuses it by its own operator allow-list.
    def edit(m: Members) -> None:
        program = json.loads(m["models/model.json"])
        node = {
            "target": "torch.os.mkdir",
            "inputs": [{"name": "path", "arg": {"as_string": str(marker)}, "kind": 1}],
            "outputs": [],
            "metadata": {},
            "is_hop_single_tensor_return": None,
            "name": "hidden",
        }
        program["graph_module"]["graph"]["nodes"].insert(0, node)
        m["models/model.json"] = json.dumps(program).encode()

    return edit


def _file_operator(marker: Path) -> Callable[[Members], None]:
    # torch's verifier allows any operator overload, aten::save (writes a file) included.
    def edit(m: Members) -> None:
        program = json.loads(m["models/model.json"])
        node = {
            "target": "torch.ops.aten.save.default",
            "inputs": [
                {"name": "item", "arg": {"as_tensor": {"name": "x"}}, "kind": 1},
                {"name": "filename", "arg": {"as_string": str(marker)}, "kind": 1},
            ],
            "outputs": [],
            "metadata": {},
            "is_hop_single_tensor_return": None,
            "name": "hidden",
        }
        program["graph_module"]["graph"]["nodes"].insert(0, node)
        m["models/model.json"] = json.dumps(program).encode()

    return edit


def _guards_code(marker: Path) -> Callable[[Members], None]:
    # torch: ep.module() compiles guards_code strings with exec() and runs them per call.
    def edit(m: Members) -> None:
        program = json.loads(m["models/model.json"])
        program["guards_code"] = [f"__import__('os').mkdir('{marker}') is None"]
        m["models/model.json"] = json.dumps(program).encode()

    return edit


def _second_program(marker: Path) -> Callable[[Members], None]:
    # torch.export.load deserialises every program in the archive, sample inputs included.
    def edit(m: Members) -> None:
        m["models/other.json"] = m["models/model.json"]
        m["data/weights/other_weights_config.json"] = m["data/weights/model_weights_config.json"]
        m["data/constants/other_constants_config.json"] = m[
            "data/constants/model_constants_config.json"
        ]
        m["data/sample_inputs/other.pt"] = torch_pickle(marker)

    return edit


def _compiled_code(marker: Path) -> Callable[[Members], None]:
    # torch: load_pt2 dlopen()s AOTInductor shared objects found under data/aotinductor/.
    def edit(m: Members) -> None:
        m["data/aotinductor/model/model.so"] = b"\x7fELF not really a shared object"

    return edit


PT2_VECTORS: dict[str, Callable[[Path], Callable[[Members], None]]] = {
    "sample_inputs": _sample_inputs,
    "pickled_weight": _pickled_weight,
    "pickled_constant": lambda mk: _constant(mk, "tensor_0", torch_pickle(mk)),
    "opaque_constant": lambda mk: _constant(mk, "opaque_obj_0", plain_pickle(mk)),
    "legacy_weights": lambda mk: _legacy("data/weights/model.pt", mk),
    "legacy_constants": lambda mk: _legacy("data/constants/model.pt", mk),
    "sympy_expr": _sympy_expr,
    "python_call": _python_call,
    "file_operator": _file_operator,
    "guards_code": _guards_code,
    "second_program": _second_program,
    "compiled_code": _compiled_code,
}
# The vectors torch itself falls for: the payload runs in torch.export.load, or (guards)
# when its ep.module() is called.
TORCH_RUNS = (
    "guards_code",
    "sample_inputs",
    "pickled_weight",
    "pickled_constant",
    "opaque_constant",
    "legacy_weights",
    "legacy_constants",
    "sympy_expr",
    "second_program",
)


def hostile_pt2(good: Path, dst: Path, vector: str, marker: Path) -> Path:
    return rewrite(good, dst, PT2_VECTORS[vector](marker))


# --- TorchScript ------------------------------------------------------------------------


class _SavesInForward(torch.nn.Module):
    """Writes the marker with ``torch.save`` (the aten::save operator) on every forward."""

    def __init__(self, marker: str) -> None:
        super().__init__()
        self.marker = marker
        self.head = torch.nn.Linear(3, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        torch.save([x], self.marker)
        return self.head(x.mean((2, 3)))


class _SavesOnLoad(torch.nn.Module):
    """Writes the marker from ``__setstate__``, which ``torch.jit.load`` runs."""

    def __init__(self, marker: str) -> None:
        super().__init__()
        self.marker = marker

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean((2, 3)).repeat(1, 2)

    @torch.jit.export
    def __getstate__(self) -> tuple[str, bool]:
        return (self.marker, self.training)

    @torch.jit.export
    def __setstate__(self, state: tuple[str, bool]) -> None:
        self.marker = state[0]
        self.training = state[1]
        torch.save([torch.zeros(1)], self.marker)


def scripted_saving(dst: Path, marker: Path, *, on_load: bool = False) -> Path:
    cls = _SavesOnLoad if on_load else _SavesInForward
    torch.jit.script(cls(str(marker))).save(str(dst))
    marker.unlink(missing_ok=True)  # scripting ran nothing, but be sure the test starts clean
    return dst


def torchscript_pickle(good: Path, dst: Path, member: str, marker: Path) -> Path:
    """A TorchScript archive whose ``data.pkl``/``constants.pkl`` is a Python pickle payload
    (torch's C++ unpickler knows no Python globals: torch.jit.load refuses it)."""

    def edit(m: Members) -> None:
        m[member] = plain_pickle(marker)

    return rewrite(good, dst, edit)


class _Spins(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        for _ in range(1 << 62):  # effectively forever
            y = y + 0.0
        return y.mean((2, 3))


class _Hoards(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kept: list[torch.Tensor] = []
        for i in range(1 << 20):  # 4 MiB each, all different: up to 4 TiB
            kept.append(torch.full([1 << 20], float(i)))
        return x.mean((2, 3)) + kept[0][0]


def scripted_spinning(dst: Path) -> Path:
    torch.jit.script(_Spins()).save(str(dst))
    return dst


def scripted_hoarding(dst: Path) -> Path:
    torch.jit.script(_Hoards()).save(str(dst))
    return dst


# --- .pth state dicts and .mar archives ----------------------------------------------------


def hostile_state_dict(dst: Path, marker: Path, *, legacy: bool = False) -> Path:
    dst.write_bytes(torch_pickle(marker, legacy=legacy))
    return dst


def mar_archive(dst: Path, serialized_name: str, serialized: bytes, **manifest: object) -> Path:
    """A TorchServe ``.mar`` (zip, MAR-INF/MANIFEST.json) carrying ``serialized``."""
    model = {
        "modelName": dst.stem,
        "serializedFile": serialized_name,
        "handler": "image_classifier",
        "modelVersion": "1.0",
        **manifest,
    }
    with zipfile.ZipFile(dst, "w") as zf:
        zf.writestr("MAR-INF/MANIFEST.json", json.dumps({"model": model}))
        zf.writestr(serialized_name, serialized)
    return dst
