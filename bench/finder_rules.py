#!/usr/bin/env python3
"""How much the learning-rate finder's choice moves with probe noise, old rule vs new.

Reads ``bench/finder_probe.py --probe-seeds 0 1 2 --json-out`` files (one per model and
thread count, one single-seed run each) and, per model, prints the rate each rule picks:

- **v2** (``FINDER_VERSION`` 2, copied here): one seed's four probes, one grid step below
  the end of the good range; one rate per (threads, seed);
- **v3** (the shipped ``_lr_finder.choose``): the probes of two seeds pooled, the grid
  rate nearest to the good rates' score-weighted geometric mean (``centre``, shown in
  brackets); one rate per (threads, seed pair); and the same rule on one seed (what
  the second seed buys);
- **shipped** (the finder as built, ``FINDER_VERSION`` 4 and on): the same rule on the
  same pooled probes cut to the engine's grid (``LR_GRID``: the files' rates up to 0.4)
  and its first ``LR_PROBE_STEPS`` steps, with the case-by-case comparison to v3 (same
  rate, a half-octave apart, further). ``--rates``/``--steps`` replay another cut. A cut
  of the steps is not exactly a shorter probe: a probe's last quarter cools down, so a
  cut's last steps ran at the full rate where a shorter probe's would not;
- a resampling of the probes (per class, one or two of the runs' probes drawn at random,
  ``--draws`` times, as if from other seeds or machines): how often each rule picks
  each rate, how often two such draws pick the same rate, and the centre's 10th-90th
  percentile range.

Runs on more than one seed (``--probe-seeds 0,1``: the finder's own probes, both seeds in
one batch) are shown as they are.

    python bench/finder_rules.py bench/results/finder_robustness/*_t?.json \
        --json-out bench/results/finder_robustness/rules.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from protolens_server.engine import LR_GRID, LR_PROBE_STEPS
from protolens_server.engine import LR_TOLERANCE as TOLERANCE
from protolens_server.engine import choose_lr as choose
from protolens_server.engine import lr_centre as centre
from protolens_server.engine import probe_end_losses as end_losses
from protolens_server.engine import probe_scores as scores

Traces = list[list[list[float]]]  # [rate][probe][step]

GRID = tuple(0.025 * 2**k for k in range(6))  # the files' rates: FINDER_VERSION 2 and 3's grid


def choose_v2(rate_scores: Sequence[float], tolerance: float = TOLERANCE) -> float:
    """``FINDER_VERSION`` 2: one grid step below the end of the good range above the best."""
    best = max(rate_scores)
    if not best > 0:
        return GRID[0]
    last = len(GRID) - 2
    k = min(list(rate_scores).index(best), last)
    while k < last and rate_scores[k + 1] >= (1 - tolerance) * best:
        k += 1
    return GRID[max(0, k - 1)]


def pooled(*runs: Traces) -> Traces:
    """The probes of several runs side by side (as the finder batches its seeds)."""
    return [[p for run in runs for p in run[r]] for r in range(len(GRID))]


def v2(traces: Traces) -> float:
    return choose_v2(scores(end_losses(traces)))


def v3(traces: Traces) -> float:
    return choose(scores(end_losses(traces)), GRID)


@dataclass(frozen=True)
class Cut:
    """The probes as a finder with the grid ``rates`` (of ``GRID``) and ``steps`` would
    have scored them: the files' traces of those rates, their first ``steps`` steps."""

    rates: tuple[float, ...]
    steps: int

    def scores(self, traces: Traces) -> list[float]:
        kept = [[t[: self.steps] for t in traces[GRID.index(r)]] for r in self.rates]
        return scores(end_losses(kept))

    def __call__(self, traces: Traces) -> float:
        return choose(self.scores(traces), self.rates)


def apart(a: float, b: float) -> str:
    """``same``, ``half-octave`` or ``further``: how far two chosen rates lie apart."""
    ratio = max(a, b) / min(a, b)
    return "same" if ratio < 1.01 else "half-octave" if ratio < 1.5 else "further"


def resampled(
    runs: list[Traces], k: int, rule: Callable[[Traces], float], draws: int
) -> list[float]:
    """``rule`` on ``draws`` resamples: per probe class, ``k`` distinct runs' probes."""
    rng = random.Random(0)
    n_probes = len(runs[0][0])
    out = []
    for _ in range(draws):
        picks = [rng.sample(range(len(runs)), k) for _ in range(n_probes)]
        traces = [
            [runs[p][r][c] for c in range(n_probes) for p in picks[c]] for r in range(len(GRID))
        ]
        out.append(rule(traces))
    return sorted(out)


def v3_centre(traces: Traces) -> float:
    return centre(scores(end_losses(traces)), GRID)


def summary(rates: list[float]) -> dict[str, Any]:
    """How often each rate came out, and how often two draws agree (or are within 1.5x)."""
    p = {r: rates.count(r) / len(rates) for r in sorted(set(rates))}
    close = sum(p[a] * p[b] for a in p for b in p if max(a, b) / min(a, b) <= 1.5)
    return {
        "share": {f"{r:g}": round(v, 3) for r, v in p.items()},
        "two_agree": round(sum(v * v for v in p.values()), 2),
        "two_within_1.5x": round(close, 2),
    }


def model_rows(files: list[Path], draws: int, shipped_rule: Cut) -> dict[str, Any]:
    runs: dict[tuple[int, int], Traces] = {}
    first_scores: dict[str, list[float]] = {}
    cut_scores: dict[str, list[float]] = {}
    finder: dict[str, Any] = {}  # the finder's own runs (both seeds in one batch)
    for f in files:
        for run in json.loads(f.read_text())["runs"]:
            assert tuple(run["rates"]) == GRID, f"{f}: not FINDER_VERSION 3's grid"
            if len(run["seeds"]) != 1:
                name = f"t{run['threads']} s{'+'.join(map(str, run['seeds']))}"
                finder[name] = {
                    "scores": [round(s, 2) for s in run["scores"]],
                    "centre": round(centre(run["scores"], GRID), 4),
                    "chosen": choose(run["scores"], GRID),
                    "shipped_scores": [round(s, 2) for s in shipped_rule.scores(run["traces"])],
                    "shipped": shipped_rule(run["traces"]),
                    "seconds": run["seconds"],
                }
                continue
            key = (run["threads"], run["seeds"][0])
            runs[key] = run["traces"]
            first_scores[f"t{key[0]} s{key[1]}"] = [round(s, 2) for s in run["scores"]]
            cut_scores[f"t{key[0]} s{key[1]}"] = [
                round(s, 2) for s in shipped_rule.scores(run["traces"])
            ]
    keys = sorted(runs)
    pairs = [(a, b) for a, b in itertools.combinations(keys, 2) if a[0] == b[0]]
    both = {f"t{a[0]} s{a[1]}+{b[1]}": pooled(runs[a], runs[b]) for a, b in pairs}
    distinct: list[Traces] = []
    for k in keys:  # small models can repeat themselves exactly at another thread count
        if runs[k] not in distinct:
            distinct.append(runs[k])
    row: dict[str, Any] = {
        "scores": first_scores,
        "shipped_scores": cut_scores,
        "v2": {f"t{t} s{s}": v2(runs[(t, s)]) for t, s in keys},
        "v3_one_seed": {f"t{t} s{s}": v3(runs[(t, s)]) for t, s in keys},
        "v3": {name: v3(traces) for name, traces in both.items()},
        "v3_centre": {name: round(v3_centre(traces), 4) for name, traces in both.items()},
        "shipped": {name: shipped_rule(traces) for name, traces in both.items()},
        "distinct_runs": len(distinct),
        "finder_runs": finder,
    }
    row["shipped_vs_v3"] = {
        name: apart(row["shipped"][name], row["v3"][name]) for name in row["v3"]
    }
    rules = (("v2", v2, 1), ("v3_one_seed", v3, 1), ("v3", v3, 2), ("shipped", shipped_rule, 2))
    for name, rule, k in rules:
        if len(distinct) > k:
            row[f"{name}_resampled"] = summary(resampled(distinct, k, rule, draws))
    if len(distinct) > 2:
        out = resampled(distinct, 2, v3_centre, draws)
        p10, p90 = out[int(0.1 * (len(out) - 1))], out[int(0.9 * (len(out) - 1))]
        row["v3_centre_resampled"] = {"p10": round(p10, 4), "p90": round(p90, 4)}
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("files", nargs="+", type=Path)
    p.add_argument("--draws", type=int, default=1000)
    p.add_argument("--json-out", type=Path)
    p.add_argument(
        "--rates",
        type=float,
        nargs="+",
        default=list(LR_GRID),
        help="the grid to replay as 'shipped' (rates of the files; default the engine's)",
    )
    p.add_argument(
        "--steps",
        type=int,
        default=LR_PROBE_STEPS,
        help="the probe steps to replay as 'shipped' (default the engine's)",
    )
    args = p.parse_args()
    shipped_rule = Cut(tuple(args.rates), args.steps)
    by_model: dict[str, list[Path]] = {}
    for f in args.files:
        by_model.setdefault(json.loads(f.read_text())["model"], []).append(f)
    doc: dict[str, Any] = {
        "command": " ".join(["python", "bench/finder_rules.py", *sys.argv[1:]]),
        "shipped": {"rates": args.rates, "steps": args.steps},
        "models": {},
    }
    for model, files in sorted(by_model.items()):
        row = model_rows(sorted(files), args.draws, shipped_rule)
        doc["models"][model] = row
        print(Path(model).parent.name or model)  # a model file: its cache folder's name
        for name in ("v2", "v3_one_seed", "v3", "shipped"):
            rates = " ".join(f"{k}: {v:g}" for k, v in row[name].items())
            r = row.get(f"{name}_resampled", {})
            print(
                f"  {name:12} {rates}; resampled {r.get('share')}, two agree "
                f"{r.get('two_agree')}, within 1.5x {r.get('two_within_1.5x')}"
            )
        print(f"  v3 centres   {row['v3_centre']}; resampled {row.get('v3_centre_resampled')}")
        for name, run in row["finder_runs"].items():
            print(
                f"  finder {name}: scores {run['scores']} centre {run['centre']} -> "
                f"{run['chosen']} (shipped: {run['shipped']})"
            )
    cases = [a for row in doc["models"].values() for a in row["shipped_vs_v3"].values()]
    doc["shipped_vs_v3"] = {k: cases.count(k) for k in ("same", "half-octave", "further")}
    print(
        f"shipped (rates {' '.join(f'{r:g}' for r in args.rates)}, {args.steps} steps) vs v3 "
        f"over {len(cases)} seed pairs: {doc['shipped_vs_v3']}"
    )
    if args.json_out:
        args.json_out.write_text(json.dumps(doc, indent=1) + "\n")
        print(f"wrote {args.json_out}")


if __name__ == "__main__":
    main()
