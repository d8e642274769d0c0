"""Hostile model files of every supported kind: the payload never runs, the file is refused
with a reason that says what to fix (the loaders, in this process; the service-level
tests are tests/models/test_models_inspection.py and tests/faults/test_hostile_models.py).

Each payload writes a marker file if it ever runs (hostile_models.py). The first test
keeps the builders honest: torch's own loaders run those payloads.
"""

from __future__ import annotations

import json
import pickle
import zipfile
from pathlib import Path

import pytest
import torch
from hostile_models import (
    PT2_VECTORS,
    TORCH_RUNS,
    hostile_pt2,
    hostile_state_dict,
    mar_archive,
    scripted_saving,
    torch_pickle,
    torchscript_pickle,
)
from protolens_server.errors import InvalidModel
from protolens_server.models import load_model
from protolens_server.models._operators import check_script_module
from protolens_server.models._pickle_scan import check_plain_tensors, pickle_globals
from protolens_server.models._sym_expr import check_sym_expr, expr_strings
from tiny_nets_models import SIDECAR, example_input

FACTORY = "tiny_nets_models:tiny_net"


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    return tmp_path / "payload-ran"


@pytest.mark.parametrize("vector", TORCH_RUNS)
def test_torch_itself_runs_the_payloads(
    vector: str, exported_path: Path, tmp_path: Path, marker: Path
) -> None:
    path = hostile_pt2(exported_path, tmp_path / "h.pt2", vector, marker)
    try:
        program = torch.export.load(path)
        program.module()(example_input(2))
    except Exception:  # torch may fail after the payload ran; what matters is that it ran
        pass
    assert marker.exists(), f"torch.export.load no longer runs the {vector} payload"


def test_torch_jit_load_runs_setstate_code(tmp_path: Path, marker: Path) -> None:
    path = scripted_saving(tmp_path / "h.pt", marker, on_load=True)
    torch.jit.load(str(path))
    assert marker.exists()


def _refused(ref: str, marker: Path, *words: str) -> str:
    with pytest.raises(InvalidModel) as info:
        load_model(ref)
    assert not marker.exists(), "the payload ran"
    for word in words:
        assert word in str(info.value), str(info.value)
    return str(info.value)


_PT2_REASONS = {
    "sample_inputs": "would import __builtin__.exec",
    "pickled_weight": "weights_only loading refused it",
    "pickled_constant": "weights_only loading refused it",
    "opaque_constant": "a pickled Python object",
    "legacy_weights": "legacy pickled payload",
    "legacy_constants": "legacy pickled payload",
    "sympy_expr": "would eval() it",
    "python_call": "not a loadable torch.export program",  # torch's verifier refuses it first
    "file_operator": "calls aten::save",
    "second_program": "exactly one program",
    "compiled_code": "AOTInductor compiled code",
}


@pytest.mark.parametrize("vector", sorted(set(PT2_VECTORS) - {"guards_code"}))
def test_pt2_payloads_never_run_and_the_file_is_refused(
    vector: str, exported_path: Path, tmp_path: Path, marker: Path
) -> None:
    path = hostile_pt2(exported_path, tmp_path / "h.pt2", vector, marker)
    message = _refused(str(path), marker, str(path), _PT2_REASONS[vector])
    assert "torch.export" in message  # the fix: re-export / re-save


def test_pt2_guards_are_never_compiled(exported_path: Path, tmp_path: Path, marker: Path) -> None:
    """Guards are Python source torch exec()s: protolens drops them (it feeds the spec's
    shape), so the program still loads and runs, without the payload."""
    path = hostile_pt2(exported_path, tmp_path / "h.pt2", "guards_code", marker)
    handle = load_model(str(path))
    handle.module(example_input(2))
    handle.program.module(check_guards=True)(example_input(2))
    assert not marker.exists()


@pytest.mark.parametrize("member", ["data.pkl", "constants.pkl"])
def test_torchscript_python_pickle_is_refused(
    member: str, scripted_path: Path, tmp_path: Path, marker: Path
) -> None:
    path = torchscript_pickle(scripted_path, tmp_path / "h.pt", member, marker)
    _refused(str(path), marker, "not a TorchScript file")


@pytest.mark.parametrize("on_load", [False, True], ids=["forward", "setstate"])
def test_torchscript_file_writes_are_refused_before_loading(
    on_load: bool, tmp_path: Path, marker: Path
) -> None:
    path = scripted_saving(tmp_path / "h.pt", marker, on_load=on_load)
    _refused(str(path), marker, "refused: the TorchScript code calls save()")


def test_script_graph_check_catches_what_the_source_scan_would(marker: Path) -> None:
    from hostile_models import _SavesInForward

    module = torch.jit.script(_SavesInForward(str(marker)))
    with pytest.raises(InvalidModel, match="calls aten::save"):
        check_script_module(module, "in memory")


def test_a_pickle_named_pt_is_refused(tmp_path: Path, marker: Path) -> None:
    path = tmp_path / "h.pt"
    path.write_bytes(torch_pickle(marker))
    _refused(str(path), marker, "not a TorchScript file")


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy-format"])
def test_state_dict_payload_is_refused(legacy: bool, tmp_path: Path, marker: Path) -> None:
    path = hostile_state_dict(tmp_path / "h.pth", marker, legacy=legacy)
    (tmp_path / "h.json").write_text(json.dumps({**SIDECAR, "factory": FACTORY}))
    _refused(str(path), marker, "weights_only loading refused it")
    _refused(f"factory:{FACTORY}@{path}", marker, "weights_only loading refused it")


def _mar_members(exported: Path, tmp: Path, marker: Path) -> dict[str, tuple[str, bytes]]:
    return {
        "pt2-sample-inputs": (
            "model.pt2",
            hostile_pt2(exported, tmp / "inner.pt2", "sample_inputs", marker).read_bytes(),
        ),
        "pt2-sympy": (
            "model.pt2",
            hostile_pt2(exported, tmp / "inner2.pt2", "sympy_expr", marker).read_bytes(),
        ),
        "torchscript-setstate": (
            "model.pt",
            scripted_saving(tmp / "inner.pt", marker, on_load=True).read_bytes(),
        ),
        "state-dict": ("model.pth", torch_pickle(marker)),
    }


@pytest.mark.parametrize(
    "inner", ["pt2-sample-inputs", "pt2-sympy", "torchscript-setstate", "state-dict"]
)
def test_mar_carrying_a_hostile_file_is_refused(
    inner: str, exported_path: Path, tmp_path: Path, marker: Path
) -> None:
    name, data = _mar_members(exported_path, tmp_path, marker)[inner]
    path = mar_archive(tmp_path / "h.mar", name, data)
    if inner == "state-dict":  # an eager archive needs its factory beside it
        (tmp_path / "h.json").write_text(json.dumps({**SIDECAR, "factory": FACTORY}))
    _refused(str(path), marker, f"{path}!{name}")


def test_the_good_files_the_hostile_ones_came_from_still_load(
    exported_path: Path, scripted_path: Path
) -> None:
    for path in (exported_path, scripted_path):
        assert load_model(str(path)).module(example_input(2)).shape == (2, 5)


# --- the checks themselves ------------------------------------------------------------------


def test_symbolic_sizes_torch_writes_pass_and_code_does_not(exported_path: Path) -> None:
    with zipfile.ZipFile(exported_path) as zf:
        program = json.loads(zf.read(next(n for n in zf.namelist() if n.endswith("model.json"))))
    written = list(expr_strings(program))
    assert written, "a dynamic-batch program has symbolic sizes"
    for text in [*written, "s0*s1 + 2", "FloorDiv(s0, 2)", "Max(1, -s0 + s1) >= 2"]:
        check_sym_expr(text, "x")
    for text in [
        "__import__('os').system('true')",
        "Symbol('s0').__class__.__base__",
        "S(\"__import__('os')\")",
        "exec('1')",
        "open",
        "Symbol('__class__')",
        "(lambda: 1)()",
        "[s0][0]",
        "s0 if True else s1",
        "x" * 5000,
    ]:
        with pytest.raises(InvalidModel, match="eval"):
            check_sym_expr(text, "x")


def test_pickle_scan_passes_tensors_and_names_payloads(marker: Path) -> None:
    import io

    for protocol in (2, 4, 5):
        buf = io.BytesIO()
        torch.save(
            ((torch.zeros(2, 3), torch.nn.Parameter(torch.ones(1))), {}),
            buf,
            pickle_protocol=protocol,
        )
        check_plain_tensors(buf.getvalue(), "sample inputs", "x")
    with pytest.raises(InvalidModel, match=r"__builtin__\.exec"):
        check_plain_tensors(torch_pickle(marker), "sample inputs", "x")
    assert pickle_globals(pickle.dumps(print, protocol=4)) == {"builtins.print"}
    assert not marker.exists()
