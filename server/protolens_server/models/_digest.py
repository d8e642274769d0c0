"""Content digests: what makes two loads of a model "the same model" for the cache.

A handle's ``digest`` covers the weights *and* the input spec (mean/std/shape
change the pixels the engine produces even when the weights do not), so a
result cached under one digest can never be served for a different model:

    digest = sha256("protolens-model/1" | weights_sha256 | canonical input spec)

``weights_sha256`` is the sha256 of the model file (TorchScript, ``.pt2``,
``.mar``) or of the state-dict tensors in sorted-key order (factory, builtin);
handles carry it in ``metadata["weights_sha256"]``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path

import torch

from protolens_server.engine.types import InputSpec

_CHUNK = 1 << 20


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def bytes_sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def state_dict_sha256(state: Mapping[str, torch.Tensor], architecture: str = "") -> str:
    """sha256 of named tensors in sorted-key order: name, dtype, shape, raw bytes.

    ``architecture`` (e.g. the factory reference) is hashed first, so the same
    weights under a different forward() never share a digest.
    """
    h = hashlib.sha256(f"state-dict/1\0{architecture}\0".encode())
    for key in sorted(state):
        value = state[key]
        if not isinstance(value, torch.Tensor):
            continue
        t = value.detach().to("cpu").contiguous()
        h.update(f"{key}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def model_digest(weights_sha256: str, spec: InputSpec, output: str = "logits") -> str:
    """``output`` is how the handle reads the forward's output: ``logits`` (not hashed, so
    the digests of such models never changed), ``log-probabilities`` (a softmax output
    seen through log, ``_probe_output.LogProbabilities``) or ``multi-label`` (one
    independent logit per label, ``handle.MULTI_LABEL``)."""
    spec_json = json.dumps(spec.to_dict(), sort_keys=True, separators=(",", ":"))
    payload = f"protolens-model/1\n{weights_sha256}\n{spec_json}"
    if output != "logits":
        payload += f"\noutput:{output}"
    return hashlib.sha256(payload.encode()).hexdigest()
