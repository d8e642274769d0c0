#!/usr/bin/env python3
"""Does ``protolens check`` fail a version only for its temperature? A check of tempered
copies of a suite model (its logits times a factor, exported as a user would) against
the model itself, with the default policy, as a user runs it:

    python bench/tempered_check.py                      # patch-cnnbn-spec, x0.05 and x0.3
    python bench/tempered_check.py --case control-cnnbn-spec --scales 0.02 0.1 1

A tempered copy is the same classifier, so a check against the original should flag
nothing it would not flag in a copy at the original temperature (the ``1`` row: an
exported copy checked against the original). Prints per scale the copy's logit spread, the
verdict, the flagged classes and why, the copy's own softmax on its prototypes and the
confidence the check read (each the lowest over the classes). Models come from the suite's cache
(``$PROTOLENS_CACHE_DIR/shortcut_suite``), trained there if missing; the store and the
check's cache go to ``--work`` (a fresh temporary folder by default). CPU, one thread.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import torch

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from protolens_server.api.testkit import scaled_logits  # noqa: E402
from protolens_server.engine import logit_spread  # noqa: E402
from protolens_server.models.registry import load_path  # noqa: E402
from shortcut_suite import CASES, run_cli_check  # noqa: E402
from shortcuts.train import ensure  # noqa: E402


def export_copy(source: Path, store: Path, name: str, scale: float) -> None:
    """``source`` (a suite model.pt2 with its model.json) x ``scale`` as ``store/name.pt2``."""
    net = scaled_logits(torch.export.load(str(source)).module(), scale)
    example = (torch.rand(2, 3, 32, 32),)
    batch = {"x": {0: torch.export.Dim("batch")}}
    torch.export.save(
        torch.export.export(net, example, dynamic_shapes=batch), str(store / f"{name}.pt2")
    )
    sidecar = json.loads(source.with_name("model.json").read_text())
    sidecar["description"] = f"{sidecar.get('description', '')} x{scale}"
    (store / f"{name}.json").write_text(json.dumps(sidecar))


def recipes() -> dict[str, object]:
    """Each suite case's shortcut model by the case's name (the control's: its twin)."""
    return {c.name: (c.model if c.kind else c.twin) for c in CASES}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--case", default="patch-cnnbn-spec", choices=sorted(recipes()))
    p.add_argument("--scales", type=float, nargs="+", default=[0.05, 0.3])
    p.add_argument("--work", type=Path, default=None)
    args = p.parse_args()
    torch.set_num_threads(1)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    work = args.work or Path(tempfile.mkdtemp(prefix="tempered-check-"))
    store, cache = work / "store", work / "cache"
    store.mkdir(parents=True, exist_ok=True)
    trained = ensure(recipes()[args.case])
    shutil.copyfile(trained.path, store / "original.pt2")
    shutil.copyfile(trained.path.with_name("model.json"), store / "original.json")
    print(f"{args.case}: logit spread {logit_spread(load_path(trained.path)):.3f}")
    print("| scale | copy's spread | verdict | flagged (why) | copy's own p | confidence read |")
    print("|---|---|---|---|---|---|")
    for scale in args.scales:
        name = f"x{scale:g}".replace(".", "_")
        export_copy(trained.path, store, name, scale)
        spread = logit_spread(load_path(store / f"{name}.pt2"))
        report, code, _ = run_cli_check(name, "original", store, cache, work / f"{name}.json", [])
        flagged = [c for c in report["classes"] if c["flags"]]
        why = ", ".join(f"{c['name']} ({' '.join(c['flags'])})" for c in flagged) or "none"
        own = min(c["new"]["probability"] for c in report["classes"])
        read = min(c.get("confidence", c["new"]["probability"]) for c in report["classes"])
        verdict = "PASS" if code == 0 else "FAIL"
        row = [f"x{scale:g}", f"{spread:.3f}", verdict, f"{len(flagged)}: {why}"]
        print("| " + " | ".join([*row, f"{own:.2f}", f"{read:.2f}"]) + " |")


if __name__ == "__main__":
    main()
