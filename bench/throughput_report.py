"""Turn a throughput result (a plain dict, the same one written as JSON) into markdown."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def fmt(value: Any, digits: int = 3) -> str:
    """A table cell: floats to ``digits`` significant figures, None as an em dash."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return "—"
        if value == 0:
            return "0"
        magnitude = math.floor(math.log10(abs(value)))
        decimals = max(0, digits - 1 - magnitude)
        return f"{value:.{decimals}f}"
    return str(value)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def write_json(path: str | Path, result: dict[str, Any]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")


def cpu_markdown(result: dict[str, Any]) -> str:
    """The CPU comparison: one row per method, then the ratios and the notes."""
    s = result["settings"]
    headers = [
        "method",
        "prototypes per call",
        "s / prototype",
        "CPU s / prototype",
        "prototypes / s",
        "mean target p",
        "path similarity (mean ± sd)",
        "p under transforms",
    ]
    rows = []
    for name, m in result["methods"].items():
        if m.get("skipped"):
            rows.append([name, *["—"] * (len(headers) - 1)])
            continue
        sim = m.get("path_similarity") or {}
        rows.append(
            [
                name,
                m["prototypes_per_call"],
                m["seconds_per_prototype"],
                m["cpu_seconds_per_prototype"],
                m["prototypes_per_second"],
                m["mean_target_probability"],
                _mean_sd(sim.get("mean"), sim.get("sd")),
                sim.get("robust_probability_mean"),
            ]
        )
    mach = result["machine"]
    out = [
        f"CPU: {s['model']}, {s['size']}×{s['size']}, {s['steps']} steps, "
        f"{len(s['classes'])} classes {list(s['classes'])}, {s['threads']} torch threads, "
        f"{s['reps']} repetitions (method order alternating), seed {s['seed']}",
        f"machine: {mach['description']}; load average {fmt(mach['loadavg_start'])} at start, "
        f"{fmt(mach['loadavg_end'])} at end",
        "",
        markdown_table(headers, rows),
        "",
    ]
    ratio = result.get("ratios", {})
    if ratio.get("throughput") is not None:
        out.append(
            "engine / Lucent throughput at a known rate: "
            f"**{fmt(ratio['throughput'])}×** wall-clock, "
            f"{fmt(ratio.get('cpu_time'))}× CPU time (target ≥ 2×); "
            f"path similarity engine − Lucent: {fmt(ratio.get('path_similarity_difference'))} "
            "(target ≥ 0)"
        )
    finder = result.get("finder")
    if finder and ratio.get("first_call_throughput") is not None:
        out.append(
            f"the engine's learning-rate finder (lr {finder['lr']:g}, once per model): "
            f"{fmt(finder['seconds'])} s wall, {fmt(finder['cpu_seconds'])} s CPU; with it "
            f"shared over this call's classes (a model's first call): "
            f"**{fmt(ratio['first_call_throughput'])}×** wall-clock, "
            f"{fmt(ratio.get('first_call_cpu_time'))}× CPU time"
        )
    for note in result.get("notes", []):
        out.append(f"- {note}")
    return "\n".join(out)


def _mean_sd(mean: float | None, sd: float | None) -> str:
    if mean is None:
        return "—"
    return fmt(mean, 2) if sd is None else f"{fmt(mean, 2)} ± {fmt(sd, 2)}"


def gpu_markdown(result: dict[str, Any]) -> str:
    """The GPU sweep: one row per (model, method, batch), then the 1000-prototype summary."""
    s = result["settings"]
    headers = [
        "model",
        "method",
        "batch",
        "s / batch",
        "prototypes / s",
        "TFLOP/s",
        "% of matmul rate",
        "peak MiB / prototype",
        "target p (mean)",
    ]
    rows = []
    for r in result["runs"]:
        rows.append(
            [
                r["model"],
                r["method"],
                r["batch"],
                r["seconds"],
                r["prototypes_per_second"],
                r["achieved_tflops"],
                r["percent_of_matmul_rate"],
                r["peak_mib_per_prototype"],
                r.get("mean_target_probability"),
            ]
        )
    dev = result["device"]
    out = [
        f"GPU: {dev['name']} ({fmt(dev['memory_gib'])} GiB), torch {dev['torch']}; "
        f"{s['size']}×{s['size']}, {s['steps']} steps; engine autocast={s['autocast']}, "
        f"channels_last={s['channels_last']}, compile={s['compile']}",
        f"measured {dev['matmul_dtype']} matmul rate: {fmt(dev['matmul_tflops'])} TFLOP/s "
        f"({dev['matmul_n']}³ products)",
        "",
        markdown_table(headers, rows),
        "",
    ]
    for model, summ in result.get("summary", {}).items():
        out.append(
            f"- {model}: best engine batch {summ['best_batch']} at "
            f"{fmt(summ['best_prototypes_per_second'])} prototypes/s; Lucent "
            f"{fmt(summ.get('lucent_prototypes_per_second'))} prototypes/s; engine / Lucent "
            f"**{fmt(summ.get('speedup_vs_lucent'))}×** (target ≥ 30×); 1000 prototypes in "
            f"**{fmt(summ['seconds_for_1000'])} s** (target < 180 s for ResNet-50); FLOP floor "
            f"{fmt(summ['floor_seconds_for_1000'])} s "
            f"({fmt(summ['gflop_per_image_step'])} GFLOP per image-step), achieved "
            f"{fmt(summ['fraction_of_floor'])} of the floor"
        )
        if "compile" in summ:
            c = summ["compile"]
            out.append(
                f"- {model}: torch.compile (engine switch) at batch {c['batch']}: "
                f"{fmt(c['prototypes_per_second'])} prototypes/s, "
                f"**{fmt(c['speedup_vs_eager'])}×** "
                f"eager; first call (compiling) {fmt(c['first_call_seconds'])} s"
            )
        if "auto" in summ:
            out.append(f"- {model}: {_auto_line(summ['auto'])}")
    for note in result.get("notes", []):
        out.append(f"- {note}")
    return "\n".join(out)


def _auto_line(a: dict[str, Any]) -> str:
    """The max_batch=0 check: probe fit, predicted vs measured peaks, the run's peak."""
    gib = 2**30
    if a["fit"] is None:
        probe = "no memory probe off CUDA (fixed size)"
    else:
        probe = (
            f"probe fit {fmt(a['fit']['fixed_bytes'] / gib)} GiB + "
            f"{fmt(a['fit']['per_image'] / 2**20)} MiB per image; measured/predicted peak "
            + ", ".join(f"B={p['batch']}: {fmt(p['measured_over_predicted'])}" for p in a["peaks"])
        )
    run = a["run"]
    peak = "n/a" if run["peak_bytes"] is None else f"{fmt(run['peak_bytes'] / gib)} GiB"
    budget = "n/a" if run["budget_bytes"] is None else f"{fmt(run['budget_bytes'] / gib)} GiB"
    return (
        f"max_batch=0 (budget {fmt(a['memory_budget_fraction'])} of the card): {a['images']} "
        f"images in chunks of **{a['size']}**; {probe}; run of {run['steps']} steps: "
        f"{fmt(run['seconds'])} s, peak {peak} (budget {budget}, within: "
        f"{fmt(run['within_budget'])})"
    )
