"""The README's main job (``protolens demo``: its own Redis, API and worker, a real job on
EfficientNet-Lite0, scored) beside busy processes: how long the job takes when the CPU is
not all the worker's own.

    python bench/demo_contention.py                          # beside 0 and 1 busy processes
    python bench/demo_contention.py --hogs 0 1 2 --reps 3 --out results.json

Each run is ``protolens demo --steps 8 --lr 0.07`` (a fixed rate and a short budget, as the
suite's demo test: the time is the stack's and the worker's, not the optimisation's) in a
fresh cache folder, so each pays the same first-use costs (loading the model, the
reference statistics); ``--hogs N`` starts N busy processes (a Python ``while True``
loop each) before it. Variants alternate over ``--reps``; the table gives the median
of the demo's own figures ("done in", "the job took") per variant. To compare code
versions, run it from another checkout (its ``protolens`` is the one imported: put its
``server`` and ``client`` folders first on ``PYTHONPATH``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DONE = re.compile(r"done in ([\d.]+) s \(the job took ([\d.]+) s\)")


def _hogs(n: int) -> list[subprocess.Popen[bytes]]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def run_demo(hogs: int) -> tuple[float, float]:
    """One demo beside ``hogs`` busy processes: (its total seconds, its job's seconds)."""
    busy = _hogs(hogs)
    try:
        time.sleep(1.0 if hogs else 0.0)  # the worker measures what the others left free
        with tempfile.TemporaryDirectory(prefix="demo-contention-") as tmp:
            env = {k: v for k, v in os.environ.items() if not k.startswith("PROTOLENS_")}
            env |= {"PROTOLENS_CACHE_DIR": f"{tmp}/cache", "PROTOLENS_DEVICE": "cpu"}
            cmd = [sys.executable, "-m", "protolens.cli", "demo", "--steps", "8"]
            cmd += ["--lr", "0.07", "--out", f"{tmp}/out"]
            done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    finally:
        for p in busy:
            p.kill()
            p.wait()
    found = DONE.search(done.stdout)
    if done.returncode != 0 or found is None:
        raise RuntimeError(f"demo failed ({done.returncode}): {done.stdout[-2000:]}{done.stderr}")
    return float(found.group(1)), float(found.group(2))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--hogs", type=int, nargs="+", default=[0, 1])
    p.add_argument("--reps", type=int, default=2)
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    runs: dict[int, list[tuple[float, float]]] = {h: [] for h in args.hogs}
    for rep in range(args.reps):
        order = args.hogs if rep % 2 == 0 else list(reversed(args.hogs))
        for h in order:
            runs[h].append(run_demo(h))
            print(f"rep {rep}, {h} busy: done in {runs[h][-1][0]} s, job {runs[h][-1][1]} s")
    import protolens_server

    where = Path(protolens_server.__file__).resolve().parents[2]
    print(f"\n`protolens demo --steps 8 --lr 0.07` ({where}), {os.cpu_count()} CPUs, median of")
    print(f"{args.reps}\n\n| busy processes | demo, done in | its job |\n|---|---|---|")
    rows = []
    for h in args.hogs:
        total = statistics.median(r[0] for r in runs[h])
        job = statistics.median(r[1] for r in runs[h])
        rows.append({"hogs": h, "done_s": total, "job_s": job, "runs": runs[h]})
        print(f"| {h} | {total:.1f} s | {job:.1f} s |")
    if args.out:
        args.out.write_text(json.dumps({"code": str(where), "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
