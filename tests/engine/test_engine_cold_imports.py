"""A cold process that generates (equidistant start) and isolates does not import
``torch._dynamo``: constructing any ``torch.optim.Optimizer`` imports it (about 1.5 s of
a cold ``protolens generate``), so the engine's plain Adam (``_optim.Adam``, a private
piece no public verb exposes) is checked here against ``torch.optim.Adam`` too."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import torch
from protolens_server.engine._optim import Adam


def test_generate_and_isolate_do_not_import_torch_dynamo(tmp_path) -> None:
    script = textwrap.dedent(
        f"""
        import sys, torch
        from pathlib import Path
        from protolens_server.api.testkit import TINY_MODEL, make_tiny_model_store
        from protolens_server.models.catalog import ModelCatalog
        from protolens_server.engine import (
            GenerationConfig, IsolationConfig, Target, generate, isolate,
        )
        store = make_tiny_model_store(Path({str(tmp_path)!r}) / "models")
        handle = ModelCatalog(store, builtins=False).load(TINY_MODEL, "cpu")
        config = GenerationConfig(steps=4, lr=0.05, start="equidistant", equidistant_steps=4)
        generate(handle, [Target((1,))], config, seed=0, device="cpu")
        isolate(handle, torch.rand(3, 16, 16), 1, IsolationConfig(steps=3), seed=0, device="cpu")
        print("torch._dynamo" in sys.modules)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=True
    )
    assert out.stdout.strip().splitlines()[-1] == "False", out.stdout + out.stderr


def test_plain_adam_is_torch_adam_bit_for_bit() -> None:
    g = torch.Generator().manual_seed(0)
    start = [torch.randn(4, 3, 5, generator=g), torch.randn(7, generator=g)]
    ours = [t.clone() for t in start]
    theirs = [t.clone().requires_grad_() for t in start]
    mine, reference = Adam(ours, lr=0.05), torch.optim.Adam(theirs, lr=0.05)
    for _ in range(20):
        grads = [torch.randn(t.shape, generator=g) for t in start]
        mine.step(grads)
        for t, grad in zip(theirs, grads, strict=True):
            t.grad = grad.clone()
        reference.step()
    for a, b in zip(ours, theirs, strict=True):
        assert torch.equal(a, b.detach())
