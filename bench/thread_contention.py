"""The engine's CPU step rate when the CPU is not all its own: busy neighbours and a
cgroup CPU quota.

    python bench/thread_contention.py                       # beside 0 and 1 busy processes
    python bench/thread_contention.py --quota 1             # in a cgroup limited to 1 CPU
    python bench/thread_contention.py --hogs 0 1 2 --seconds 20 --out results.json

Each variant runs in a fresh child process (OpenMP reads its environment once, when torch
loads it) that makes prototypes with the real engine (fixed rate, 8 steps a call, one
model) for ``--seconds``; variants alternate order over ``--reps`` and the table gives
each variant's median steps per second and its ratio to the first.

- ``torch default``: torch's own thread count (one per core it can see) and GNU
  OpenMP's default wait policy (threads spin a while after each parallel region);
- ``OMP_WAIT_POLICY=PASSIVE`` and ``GOMP_SPINCOUNT=N``: threads sleep at once, or
  after fewer spins;
- ``1 torch thread``;
- ``protolens budget``: ``cpu_budget.configure_torch_threads()``, what the API sets at
  start: the affinity mask capped by the cgroup CPU quota;
- ``protolens worker``: ``cpu_budget.TorchThreads``, as a worker runs its engine: the
  budget, and before each batch (here: each engine call) the CPUs other processes left
  free since the last one, within it.

``--hogs N``: N busy processes (a Python ``while True`` loop each) run beside the
children. ``--quota CPUS`` (root, a writable cgroup ``cpu`` hierarchy): every child runs
in a new cgroup with that CPU quota, as a container with a CPU limit does.

Models: EfficientNet-Lite0 at 224 px (the built-in) and a 32-px CNN with BatchNorm (the
shortcut suite's architecture, random weights: speed does not depend on them).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

HERE = Path(__file__).resolve().parent
MODELS = ("efficientnet_lite0", "cnn_bn-32px")
_OMP_VARS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS")
# name -> (environment added to the child's, torch threads: "default", "budget" or a count)
VARIANTS: dict[str, tuple[dict[str, str], str]] = {
    "torch default": ({}, "default"),
    "OMP_WAIT_POLICY=PASSIVE": ({"OMP_WAIT_POLICY": "PASSIVE"}, "default"),
    "GOMP_SPINCOUNT=10000": ({"GOMP_SPINCOUNT": "10000"}, "default"),
    "1 torch thread": ({}, "1"),
    "protolens budget": ({}, "budget"),
    "protolens worker": ({}, "worker"),
}


def _child(model_name: str, seconds: float, threads: str) -> None:
    """Run in a fresh process: make prototypes for ``seconds`` and print the rate."""
    import torch
    from protolens_server.cpu_budget import TorchThreads, configure_torch_threads
    from protolens_server.engine import Classifier, GenerationConfig, InputSpec, generate

    worker = TorchThreads() if threads == "worker" else None
    if threads == "budget":
        configure_torch_threads()
    elif threads not in ("default", "worker"):
        torch.set_num_threads(int(threads))
    if model_name == "efficientnet_lite0":
        from protolens_server.models import load_model

        model = load_model("efficientnet_lite0")
        targets = [1, 2]
    else:
        sys.path.insert(0, str(HERE))
        from shortcuts.models import build, sidecar_spec

        spec = sidecar_spec("spec")
        model = Classifier(
            build("cnn_bn", "spec", 10).eval(),
            InputSpec(height=32, width=32, mean=tuple(spec["mean"]), std=tuple(spec["std"])),
            10,
        )
        targets = list(range(4))
    steps = 8
    config = GenerationConfig(steps=steps, lr=0.05)
    generate(model, targets, config, seed=0)  # warm-up: caches, allocator, one-time work
    done, start, used = 0, time.perf_counter(), []
    while time.perf_counter() - start < seconds:
        if worker is not None:
            worker.before_batch()
        used.append(torch.get_num_threads())
        generate(model, targets, config, seed=done + 1)
        done += steps
    rate = done / (time.perf_counter() - start)
    print(json.dumps({"steps_per_s": rate, "threads": statistics.median(used)}))


@contextlib.contextmanager
def _cgroup(quota: float | None) -> Iterator[Path | None]:
    """A new cgroup with ``quota`` CPUs (v2 ``cpu.max`` or v1 CFS files), removed after."""
    if quota is None:
        yield None
        return
    v2 = Path("/sys/fs/cgroup")
    if (v2 / "cgroup.controllers").exists():
        group = v2 / f"protolens-bench-{uuid.uuid4().hex[:8]}"
        group.mkdir()
        (group / "cpu.max").write_text(f"{int(quota * 100000)} 100000\n")
    else:
        group = v2 / "cpu" / f"protolens-bench-{uuid.uuid4().hex[:8]}"
        group.mkdir()
        (group / "cpu.cfs_period_us").write_text("100000\n")
        (group / "cpu.cfs_quota_us").write_text(f"{int(quota * 100000)}\n")
    try:
        yield group
    finally:
        group.rmdir()


def _run_child(
    model_name: str, variant: str, seconds: float, group: Path | None
) -> dict[str, object]:
    extra, threads = VARIANTS[variant]
    env = {k: v for k, v in os.environ.items() if k not in _OMP_VARS} | extra
    cmd = [sys.executable, __file__, "--child", model_name, str(seconds), threads]
    if group is not None:  # join the cgroup, then become the child
        cmd = ["sh", "-c", f'echo $$ > {group / "cgroup.procs"} && exec "$@"', "sh", *cmd]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def _hog() -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def main(argv: list[str] | None = None) -> int:
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "--child":
        _child(sys.argv[2], float(sys.argv[3]), sys.argv[4])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--hogs",
        type=int,
        nargs="+",
        default=[0, 1],
        help="numbers of busy processes to measure beside (default 0 1)",
    )
    parser.add_argument(
        "--quota",
        type=float,
        help="run the children in a cgroup of this "
        "many CPUs (root; a writable cgroup cpu hierarchy)",
    )
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--seconds", type=float, default=10.0, help="timed seconds per child")
    parser.add_argument("--reps", type=int, default=3, help="children per variant and setting")
    parser.add_argument("--out", type=Path, help="JSON results")
    args = parser.parse_args(argv)

    rows: list[dict[str, object]] = []
    print(
        f"{os.cpu_count()} CPUs; load average before: {os.getloadavg()[0]:.2f}; "
        f"quota: {args.quota or 'none'}",
        flush=True,
    )
    for model_name in args.models:
        for hogs in args.hogs:
            procs = [_hog() for _ in range(hogs)]
            try:
                rates: dict[str, list[float]] = {v: [] for v in args.variants}
                threads: dict[str, float] = {}  # median threads over a child's calls
                with _cgroup(args.quota) as group:
                    for rep in range(args.reps):
                        order = args.variants if rep % 2 == 0 else args.variants[::-1]
                        for v in order:
                            r = _run_child(model_name, v, args.seconds, group)
                            rates[v].append(float(r["steps_per_s"]))  # type: ignore[arg-type]
                            threads[v] = float(r["threads"])  # type: ignore[arg-type]
            finally:
                for p in procs:
                    p.kill()
                    p.wait()
            med = {v: statistics.median(x) for v, x in rates.items()}
            base = med[args.variants[0]]
            rows.append(
                {
                    "model": model_name,
                    "busy_processes": hogs,
                    "quota": args.quota,
                    "threads": threads,
                    "steps_per_s": med,
                    "runs": rates,
                    "over_first": {v: x / base for v, x in med.items()},
                }
            )
            print(
                f"{model_name}, {hogs} busy: "
                + ", ".join(
                    f"{v} {med[v]:.2f} step/s ({threads[v]:g} threads)" for v in args.variants
                ),
                flush=True,
            )

    names = list(args.variants)
    print(
        "\n| model | busy processes | CPU quota | "
        + " | ".join(f"{n} (step/s, threads)" for n in names)
        + " |"
    )
    print("|---|---|---|" + "---|" * len(names))
    for r in rows:
        s, x, t = r["steps_per_s"], r["over_first"], r["threads"]
        cells = [
            f"{s[n]:.2f}, {t[n]:g}" + ("" if i == 0 else f" ({x[n]:.2f}x)")  # type: ignore[index]
            for i, n in enumerate(names)
        ]
        print(
            f"| {r['model']} | {r['busy_processes']} | {r['quota'] or 'none'} | "
            + " | ".join(cells)
            + " |"
        )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"command": " ".join(sys.argv), "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
