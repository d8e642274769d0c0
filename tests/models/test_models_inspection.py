"""Model inspection in a child process: same answer as an in-process load, cached by
content, cut off by its time and memory limits, and a store where one file is broken,
hostile or hangs still lists, describes and loads every other model."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest
from hostile_models import hostile_pt2, scripted_hoarding, scripted_saving, scripted_spinning
from protolens_server.errors import FailedPrecondition, InvalidModel
from protolens_server.models import ModelCatalog, load_model
from protolens_server.models.info import ModelInfo, ModelState
from protolens_server.models.inspection import InspectionLimits, Inspector, Target
from tiny_nets_models import CLASS_NAMES, SIDECAR, example_input


def _sig(path: Path) -> tuple[object, ...]:
    st = path.stat()
    return (str(path), st.st_size, st.st_mtime_ns)


def test_inspection_in_a_child_matches_an_in_process_load(
    exported_path: Path, scripted_path: Path, tmp_path: Path
) -> None:
    store = tmp_path / "store"
    store.mkdir()
    shutil.copy(scripted_path, store / "fruit.pt")
    (store / "fruit.json").write_text(json.dumps({**SIDECAR, "class_names": CLASS_NAMES}))
    shutil.copy(exported_path, store / "prog.pt2")
    inspector = Inspector()
    for name in ("fruit", "prog"):
        path = next(store.glob(f"{name}.pt*"))
        info = inspector.inspect(Target(name, "", str(path)), _sig(path))
        here = ModelInfo.of(load_model(str(path), name=name), name)
        assert info == here, (info, here)
        assert info.state is ModelState.READY
    assert inspector.processes_started == 2


def test_inspection_is_cached_by_content(scripted_path: Path, tmp_path: Path) -> None:
    path = tmp_path / "m.pt"
    shutil.copy(scripted_path, path)
    inspector = Inspector()
    first = inspector.inspect(Target("m", "", str(path)), _sig(path))
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))  # touched, same bytes
    again = inspector.inspect(Target("m", "", str(path)), _sig(path))
    assert again == first and inspector.processes_started == 1
    other = Inspector()  # another catalog in this process (a worker beside the API)
    assert other.inspect(Target("m", "", str(path)), _sig(path)) == first
    assert other.processes_started == 0
    (tmp_path / "m.json").write_text(json.dumps({"description": "changed sidecar"}))
    changed = inspector.inspect(Target("m", "", str(path)), (*_sig(path), "sidecar"))
    assert changed.description == "changed sidecar" and inspector.processes_started == 2


def test_a_model_that_never_finishes_is_cut_off_by_the_time_limit(tmp_path: Path) -> None:
    path = scripted_spinning(tmp_path / "spin.pt")
    inspector = Inspector(InspectionLimits(timeout_s=2.0, retry_s=0.0))
    target = Target("spin", "", str(path))
    pending = inspector.inspect(target, _sig(path), wait_s=0.1)
    assert pending.state is ModelState.INSPECTING and "being inspected" in pending.unusable_reason
    started = time.monotonic()
    info = inspector.inspect(target, _sig(path))
    assert time.monotonic() - started < 15
    assert info.state is ModelState.UNUSABLE
    assert "did not finish within 2 s" in info.unusable_reason
    assert "model_inspect_timeout_s" in info.unusable_reason
    # a hit limit is tried again after retry_s (the machine may have been busy)
    assert inspector.inspect(target, _sig(path)).state is ModelState.UNUSABLE
    assert inspector.processes_started == 2


def test_a_model_that_eats_memory_is_cut_off_by_the_memory_limit(tmp_path: Path) -> None:
    path = scripted_hoarding(tmp_path / "hog.pt")
    inspector = Inspector(InspectionLimits(timeout_s=120, memory_bytes=256 * 2**20))
    started = time.monotonic()
    info = inspector.inspect(Target("hog", "", str(path)), _sig(path))
    assert time.monotonic() - started < 60
    assert info.state is ModelState.UNUSABLE
    assert "model_inspect_memory_bytes = 256 MiB" in info.unusable_reason, info.unusable_reason


def test_a_hostile_file_is_unusable_and_its_payload_never_runs_in_the_child(
    exported_path: Path, tmp_path: Path
) -> None:
    marker = tmp_path / "payload-ran"
    path = hostile_pt2(exported_path, tmp_path / "h.pt2", "sample_inputs", marker)
    inspector = Inspector(InspectionLimits(retry_s=0.0))
    info = inspector.inspect(Target("h", "", str(path)), _sig(path))
    assert info.state is ModelState.UNUSABLE and "__builtin__.exec" in info.unusable_reason
    assert inspector.inspect(Target("h", "", str(path)), _sig(path)) == info
    assert inspector.processes_started == 1  # a refusal stands until the file changes
    assert info.input_spec is None and info.digest == ""
    assert not marker.exists()


@pytest.fixture
def mixed_store(tmp_path: Path, exported_path: Path, scripted_path: Path) -> Path:
    store = tmp_path / "store"
    store.mkdir()
    shutil.copy(exported_path, store / "good.pt2")
    hostile_pt2(exported_path, store / "hostile.pt2", "sympy_expr", tmp_path / "payload-ran")
    scripted_saving(store / "writer.pt", tmp_path / "payload-ran", on_load=True)
    (store / "broken.pt").write_bytes(b"not a model")
    shutil.copy(scripted_path, store / "twice.pt")
    shutil.copy(exported_path, store / "twice.pt2")
    return store


def test_one_bad_file_never_breaks_the_store(mixed_store: Path, tmp_path: Path) -> None:
    catalog = ModelCatalog(mixed_store, builtins=False, inspector=Inspector())
    names = catalog.names()
    assert names == ["broken", "good", "hostile", "twice", "writer"]
    states = {n: catalog.show(n) for n in names}
    assert {n: i.state.value for n, i in states.items()} == {
        "broken": "UNUSABLE",
        "good": "READY",
        "hostile": "UNUSABLE",
        "twice": "UNUSABLE",
        "writer": "UNUSABLE",
    }
    assert "not a TorchScript file" in states["broken"].unusable_reason
    assert "eval" in states["hostile"].unusable_reason
    assert "calls save()" in states["writer"].unusable_reason
    assert "several model files" in states["twice"].unusable_reason
    with pytest.raises(InvalidModel, match=r"model 'hostile' is unusable: .*eval"):
        catalog.describe("hostile")
    with pytest.raises(InvalidModel, match="unusable"):
        catalog.load("writer")  # refused before any in-process load
    handle = catalog.load("good")
    assert handle.module(example_input(2)).shape == (2, 5)
    assert catalog.describe("good").digest == handle.digest
    assert not (tmp_path / "payload-ran").exists()


def test_a_pending_inspection_answers_inspecting_then_the_result(tmp_path: Path) -> None:
    store = tmp_path / "store"
    store.mkdir()
    scripted_spinning(store / "spin.pt")
    catalog = ModelCatalog(store, builtins=False, inspector=Inspector(InspectionLimits(2.0)))
    assert catalog.show("spin", wait_s=0).state is ModelState.INSPECTING
    with pytest.raises(FailedPrecondition, match="being inspected") as info:
        catalog.describe("spin", wait_s=0)
    assert info.value.metadata["retry_after_s"] == "2"
    assert catalog.show("spin").state is ModelState.UNUSABLE  # waits: cut off after 2 s


_LONG_TMPDIR_SCRIPT = """
import json, sys
from protolens_server.models.inspection import Inspector, Target
if __name__ == "__main__":
    info = Inspector().inspect(Target("m", "", sys.argv[1]), ("sig",))
    print(json.dumps(info.state.name))
"""


def test_inspection_works_under_a_long_tmpdir(scripted_path: Path, tmp_path: Path) -> None:
    """The forkserver's Unix socket lives under TMPDIR; a deep TMPDIR (a CI or pytest
    folder) made it fail with "AF_UNIX path too long" before the inspector used a short
    folder of its own."""
    import subprocess
    import sys

    long_tmp = tmp_path / ("t" * 100)
    long_tmp.mkdir()
    script = tmp_path / "inspect_long_tmp.py"
    script.write_text(_LONG_TMPDIR_SCRIPT)
    out = subprocess.run(
        [sys.executable, str(script), str(scripted_path)],
        env={**os.environ, "TMPDIR": str(long_tmp)},
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == '"READY"'
