"""CUDA correctness of the engine's fast path, on a trained model (built-in EfficientNet-Lite0).

A trained model is needed for check 2: with random weights a torchvision ResNet-18's
logits barely depend on the input, and its prototypes stay near the uniform 0.001
(measured on CPU: p = 0.002 after 48 steps at 96 px, with or without re-estimated
BatchNorm statistics). ``--model resnet18`` runs the same checks on one anyway.

Checks, each printed as a table row (exit status 1 if any fails):

1. bf16 autocast + channels_last and the plain fp32 path, same seed, end at the same
   target probabilities (within ``--tolerance``);
2. every prototype of both paths reaches a high target probability (``--min-probability``);
3. the fast path's images hold that probability when the model runs them in fp32 (the
   prototypes do not depend on bf16 rounding);
4. a prototype generated alone ends at the same target probability as in the batch, on the
   fp32 path and on the fast path (bf16 weights cast once, ``engine/_precision.py``);
5. (unless ``--no-compile``) the fast path with ``generate(compile=True)`` ends at the same
   target probabilities as the eager fast path (its first call's seconds include compiling).

On ``--device cpu`` the engine ignores autocast (channels_last still applies), so check 1
compares fp32 with fp32 there: the CPU run only smoke-tests this script.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from protolens_server.engine import Classifier, GenerationConfig, InputSpec, generate

# goldfish, golden retriever, beacon/lighthouse, espresso (ImageNet-1k indices)
CLASSES = (1, 207, 437, 967)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--quick", action="store_true", help="small image, few steps (CPU smoke)")
    p.add_argument("--model", default="efficientnet_lite0", help="or resnet18 (random weights)")
    p.add_argument("--steps", type=int, help="default 128 (quick: 32)")
    p.add_argument("--tolerance", type=float, default=0.05, help="max |p_fast - p_fp32|")
    p.add_argument("--min-probability", type=float, default=0.9)
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile check")
    p.add_argument("--json-out", type=Path)
    args = p.parse_args(argv)
    device = torch.device(args.device)
    steps = args.steps or (32 if args.quick else 128)
    classes = CLASSES[:2] if args.quick else CLASSES
    base, spec = _model(args.model)
    size = spec.height
    config = GenerationConfig(steps=steps, max_batch=len(classes))
    fast_cfg = config.replace(autocast=True, channels_last=True)
    plain_cfg = config.replace(autocast=False, channels_last=False)
    plain_model = Classifier(base.to(device), spec, 1000)
    fast_model = Classifier(copy.deepcopy(base).to(device), spec, 1000)  # made channels_last

    def run(
        clf: Classifier, cfg: GenerationConfig, cls: tuple[int, ...], compile: bool = False
    ) -> tuple[list[Any], float]:
        t0 = time.perf_counter()
        out = generate(clf, list(cls), cfg, seed=0, device=device, compile=compile)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return out, time.perf_counter() - t0

    plain, t_plain = run(plain_model, plain_cfg, classes)
    alone, _ = run(plain_model, plain_cfg, classes[:1])
    fast, t_fast = run(fast_model, fast_cfg, classes)
    fast_alone, _ = run(fast_model, fast_cfg, classes[:1])
    p_fast = [x.probability for x in fast]
    p_plain = [x.probability for x in plain]
    p_fast_in_fp32 = _fp32_probabilities(base, spec, fast, device)
    p_compiled: list[float] = []
    t_compiled = None
    if not args.no_compile:
        compiled, t_compiled = run(fast_model, fast_cfg, classes, compile=True)
        p_compiled = [x.probability for x in compiled]
    rows = [
        _check(
            "bf16+channels_last vs fp32: max |Δ target p|",
            max(abs(a - b) for a, b in zip(p_fast, p_plain, strict=True)),
            f"<= {args.tolerance}",
            lambda v: v <= args.tolerance,
        ),
        _check(
            "lowest target p (fast, fp32 paths)",
            min(p_fast + p_plain),
            f">= {args.min_probability}",
            lambda v: v >= args.min_probability,
        ),
        _check(
            "lowest target p of fast-path images run in fp32",
            min(p_fast_in_fp32),
            f">= {args.min_probability}",
            lambda v: v >= args.min_probability,
        ),
        _check(
            "alone vs in batch (fp32): |Δ target p|",
            abs(alone[0].probability - plain[0].probability),
            f"<= {args.tolerance}",
            lambda v: v <= args.tolerance,
        ),
        _check(
            "alone vs in batch (bf16 fast path): |Δ target p|",
            abs(fast_alone[0].probability - fast[0].probability),
            f"<= {args.tolerance}",
            lambda v: v <= args.tolerance,
        ),
    ]
    if p_compiled:
        rows.append(
            _check(
                "compiled vs eager fast path: max |Δ target p|",
                max(abs(a - b) for a, b in zip(p_compiled, p_fast, strict=True)),
                f"<= {args.tolerance}",
                lambda v: v <= args.tolerance,
            )
        )
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu (smoke)"
    print(
        f"\nCUDA correctness: {args.model}, {size}×{size}, {steps} steps, "
        f"classes {list(classes)}, on {name}; fast path {t_fast:.1f} s, fp32 path {t_plain:.1f} s"
    )
    print("\n| check | value | needs | ok |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['check']} | {r['value']:.4g} | {r['needs']} | {'yes' if r['ok'] else 'NO'} |")
    print(f"\ntarget p fast: {_fmt(p_fast)}; fp32: {_fmt(p_plain)}; "
          f"fast images in fp32: {_fmt(p_fast_in_fp32)}")  # fmt: skip
    if t_compiled is not None:
        print(f"compiled fast path: {t_compiled:.1f} s including compilation; "
              f"target p {_fmt(p_compiled)}")  # fmt: skip
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "device": name,
            "size": size,
            "steps": steps,
            "model": args.model,
            "classes": list(classes),
            "checks": rows,
            "p_fast": p_fast,
            "p_fp32": p_plain,
            "p_fast_images_in_fp32": p_fast_in_fp32,
            "p_compiled": p_compiled,
            "seconds": {"fast": t_fast, "fp32": t_plain, "compiled_first_call": t_compiled},
        }
        args.json_out.write_text(json.dumps(payload, indent=2) + "\n")
    return 0 if all(r["ok"] for r in rows) else 1


def _model(name: str) -> tuple[torch.nn.Module, InputSpec]:
    """The frozen module and its input spec."""
    if name == "resnet18":
        import torchvision

        torch.manual_seed(0)
        module = torchvision.models.resnet18(weights=None).eval().requires_grad_(False)
        return module, InputSpec()
    from protolens_server.models import load_model

    handle = load_model(name)
    return handle.module, handle.input_spec


@torch.no_grad()
def _fp32_probabilities(
    module: torch.nn.Module, spec: InputSpec, prototypes: list[Any], device: torch.device
) -> list[float]:
    module = module.to(memory_format=torch.contiguous_format)
    x = torch.stack([p.image for p in prototypes]).to(device)
    probs = F.softmax(module(spec.normalise(x)).float(), dim=1)
    return [float(probs[k, p.target.classes[0]]) for k, p in enumerate(prototypes)]


def _check(name: str, value: float, needs: str, ok: Any) -> dict[str, Any]:
    return {"check": name, "value": float(value), "needs": needs, "ok": bool(ok(value))}


def _fmt(values: list[float]) -> str:
    return ", ".join(f"{v:.3f}" for v in values)


if __name__ == "__main__":
    sys.exit(main())
