"""The content cache key: what determines a job's output, and nothing else.

Tenant, priority, request_id and trace_id are deliberately left out, so
identical requests from anyone share one generation and one stored result
(results never say who asked). The model enters by its weight digest, not its
name, so a changed model never reads a stale result.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from protolens_server import SCORES_VERSION
from protolens_server.queue.records import JobSpec


def cache_material(spec: JobSpec) -> dict[str, Any]:
    """The fields hashed into the cache key, as a JSON-able dict (an isolation adds its
    mode and its image's digest: the blob key, the sha256 of the PNG; a record written
    before the blob store, the sha256 of its base64; a job with a reference set adds the
    scores version, since its scores are part of its output; a prototype job without one
    has the key it always had)."""
    material = {
        "model_digest": spec.model_digest,
        "targets": [t.material() for t in spec.targets],
        "config": spec.config.to_dict(),
        "seed": spec.seed,
        "reference_digest": spec.reference_digest,
        "engine_version": spec.engine_version,
    }
    if spec.reference_digest:
        material["scores_version"] = SCORES_VERSION
    if spec.mode != "prototype":
        material["mode"] = spec.mode
        material["image_digest"] = spec.image_key or hashlib.sha256(spec.image.encode()).hexdigest()
    return material


def canonical_json(value: Any) -> str:
    """Key-sorted, whitespace-free JSON: equal values give equal strings."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def cache_key(spec: JobSpec) -> str:
    """sha256 hex of the canonical JSON of ``cache_material(spec)``."""
    return hashlib.sha256(canonical_json(cache_material(spec)).encode()).hexdigest()


def batch_key(spec: JobSpec) -> str:
    """Jobs with equal batch keys may share one engine call (same model, same config).

    Seeds and targets may differ: the engine takes one seed per target.
    """
    material = {
        "model": spec.model,
        "model_digest": spec.model_digest,
        "config": spec.config.to_dict(),
    }
    if spec.mode != "prototype":  # never batched with prototype jobs
        material["mode"] = spec.mode
    return hashlib.sha256(canonical_json(material).encode()).hexdigest()
