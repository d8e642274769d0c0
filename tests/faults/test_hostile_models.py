"""Hostile model files in the store of a real API server and a real worker (issue 14).

The store holds a working TorchScript model, a working ``.pt2`` program, eleven
hostile files of every supported kind (pickle payloads in a ``.pt2``'s sample
inputs, weights and constants, a sympy ``eval`` payload, compiled code, TorchScript
that writes files on load or on forward, a pickle named ``.pt``, a ``.pth`` state
dict with a malicious reduce, ``.mar`` archives carrying such files) and one that
never finishes loading. Each payload writes a marker file if it ever runs. Through
gRPC: ListModels lists everything (hostile files UNUSABLE with their reason, the
slow one INSPECTING until its time limit cuts it off), GetModel says the same,
CreatePrototypeJob on a hostile model is FAILED_PRECONDITION, and a job on a good
model succeeds. Then a good model is replaced by a hostile file after its job was
queued: the worker refuses to load it and the job fails. No marker ever appears.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
import time
from pathlib import Path

import pytest
import torch
from faults_support import fault_settings
from protolens import AsyncClient
from protolens.errors import FailedPreconditionError
from protolens_server.api.server import start_server
from protolens_server.api.testkit import TINY_MODEL, make_tiny_model_store
from protolens_server.worker.worker import Worker

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "models"))  # hostile_models

from hostile_models import (
    hostile_pt2,
    hostile_state_dict,
    mar_archive,
    scripted_saving,
    scripted_spinning,
    torch_pickle,
)

FAST = {"steps": 2, "transforms": "small", "start": "constant", "equidistant_steps": 0}
SIDECAR = {"channels": 3, "height": 16, "width": 16, "mean": 0.5, "std": 0.25}


class _Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.head = torch.nn.Linear(4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.conv(x)).mean((2, 3)))


def _export(path: Path) -> Path:
    torch.manual_seed(0)
    program = torch.export.export(
        _Net().eval(),
        (torch.rand(2, 3, 16, 16),),
        dynamic_shapes={"x": {0: torch.export.Dim("batch", min=1, max=1024)}},
    )
    torch.export.save(program, path)
    return path


def _hostile_store(store: Path, good_pt2: Path, markers: Path) -> dict[str, str]:
    """Write the hostile files; returns model name -> a phrase its reason must contain."""
    mk = iter(markers / f"payload-{i}" for i in range(100))
    tmp = markers.parent
    expected = {}
    for name, vector, phrase in [
        ("h_sample_inputs", "sample_inputs", "__builtin__.exec"),
        ("h_pickled_weight", "pickled_weight", "weights_only"),
        ("h_opaque_constant", "opaque_constant", "pickled Python object"),
        ("h_sympy", "sympy_expr", "eval"),
        ("h_compiled", "compiled_code", "AOTInductor"),
    ]:
        hostile_pt2(good_pt2, store / f"{name}.pt2", vector, next(mk))
        expected[name] = phrase
    scripted_saving(store / "h_ts_setstate.pt", next(mk), on_load=True)
    scripted_saving(store / "h_ts_forward.pt", next(mk), on_load=False)
    (store / "h_pickle.pt").write_bytes(torch_pickle(next(mk)))
    hostile_state_dict(store / "h_state_dict.pth", next(mk))
    sidecar = {**SIDECAR, "factory": "torch.nn:Identity"}  # never imported: the weights fail first
    (store / "h_state_dict.json").write_text(json.dumps(sidecar))
    inner = hostile_pt2(good_pt2, tmp / "inner.pt2", "sample_inputs", next(mk))
    mar_archive(store / "h_mar_pt2.mar", "model.pt2", inner.read_bytes())
    inner_ts = scripted_saving(tmp / "inner.pt", next(mk), on_load=True)
    mar_archive(store / "h_mar_ts.mar", "model.pt", inner_ts.read_bytes())
    expected |= {
        "h_ts_setstate": "calls save()",
        "h_ts_forward": "calls save()",
        "h_pickle": "not a TorchScript file",
        "h_state_dict": "weights_only",
        "h_mar_pt2": "__builtin__.exec",
        "h_mar_ts": "calls save()",
    }
    return expected


async def _until_finished(client: AsyncClient, job, timeout: float = 120):
    deadline = time.monotonic() + timeout
    while True:
        got = await client.get_job(job)
        if got.state in ("SUCCEEDED", "FAILED", "CANCELLED"):
            return got
        assert time.monotonic() < deadline, got
        await asyncio.sleep(0.1)


@pytest.mark.timeout(240)
async def test_hostile_model_files_never_run_and_never_break_the_service(
    redis_url: str, tmp_path: Path, report
) -> None:
    store = make_tiny_model_store(tmp_path / "store")
    markers = tmp_path / "markers"
    markers.mkdir()
    good_pt2 = _export(tmp_path / "good.pt2")
    shutil.copy(good_pt2, store / "victim.pt2")
    (store / "victim.json").write_text(json.dumps(SIDECAR))
    expected = _hostile_store(store, good_pt2, markers)
    scripted_spinning(store / "h_spins.pt")
    settings = fault_settings(
        redis_url, store, model_inspect_timeout_s=5.0, model_inspect_wait_s=1.0, max_attempts=2
    )
    server, _ = await start_server(settings, sample_interval_s=0.2)
    try:
        async with AsyncClient(f"127.0.0.1:{server.port}") as client:
            started = time.monotonic()
            listed = {m.id: m for m in await client.list_models()}
            first_list_s = time.monotonic() - started
            assert set(listed) == {TINY_MODEL, "victim", "h_spins", *expected}
            # answers within model_inspect_wait_s; models still being inspected say so
            assert first_list_s < 1.0 + 2.0, first_list_s
            while any(m.state == "INSPECTING" for n, m in listed.items() if n != "h_spins"):
                assert time.monotonic() - started < 120, listed
                await asyncio.sleep(0.2)
                listed = {m.id: m for m in await client.list_models()}
            settled_s = time.monotonic() - started
            assert listed[TINY_MODEL].state == "READY", listed[TINY_MODEL]
            assert listed["victim"].state == "READY", listed["victim"]
            assert listed["h_spins"].state in ("INSPECTING", "UNUSABLE")
            for name, phrase in expected.items():
                model = await client.get_model(name)
                assert model.state == "UNUSABLE", (name, model)
                assert phrase in model.unusable_reason, (name, model.unusable_reason)
                assert listed[name].unusable_reason == model.unusable_reason
                with pytest.raises(FailedPreconditionError, match="unusable") as refused:
                    await client.create_prototype_job(name, [0], config=FAST)
                assert phrase in refused.value.message, (name, refused.value.message)

            good = await client.create_prototype_job(TINY_MODEL, [1], config=FAST)
            victim = await client.create_prototype_job("victim", [1], config=FAST)
            # the file is replaced by a hostile one after its job was queued
            hostile_pt2(good_pt2, tmp_path / "swap.pt2", "sympy_expr", markers / "payload-swap")
            shutil.copy(tmp_path / "swap.pt2", store / "victim.pt2")
            worker = Worker(settings, name="w-hostile", block_ms=100)
            await asyncio.wait_for(worker.run(burst=True), 120)
            good_done = await _until_finished(client, good)
            victim_done = await _until_finished(client, victim)
            assert good_done.state == "SUCCEEDED", good_done
            assert victim_done.state == "FAILED", victim_done
            assert "unusable" in victim_done.error.message, victim_done

            for _ in range(300):
                spins = await client.get_model("h_spins")
                if spins.state != "INSPECTING":
                    break
                await asyncio.sleep(0.1)
            assert spins.state == "UNUSABLE"
            assert "did not finish within 5 s" in spins.unusable_reason
            started = time.monotonic()
            for _ in range(20):
                again = await client.list_models()
            warm_list_ms = (time.monotonic() - started) / 20 * 1000
            assert {m.id: m.state for m in again}[TINY_MODEL] == "READY"
    finally:
        await server.stop(grace=0)
    ran = sorted(p.name for p in markers.iterdir())
    assert not ran, f"payloads ran: {ran}"
    report(
        "hostile model files in the store (11 payload files: .pt2 pickles/sympy eval/AOTI, "
        "TorchScript file writes, .pt/.pth pickles, .mar carrying them; 1 file that never "
        "loads)",
        f"no payload ran (API, inspection children, worker); all listed, hostile ones "
        f"UNUSABLE with the reason, jobs on them FAILED_PRECONDITION; the endless one cut off "
        f"at 5 s; a good model's job SUCCEEDED; a model swapped for a hostile file after its "
        f"job was queued: the worker refused it, job FAILED; ListModels answered in "
        f"{first_list_s:.1f} s while {len(listed)} files were inspected (all settled after "
        f"{settled_s:.1f} s), then in {warm_list_ms:.1f} ms",
        lost=0,
        fuzzed=len(expected) + 2,
    )
