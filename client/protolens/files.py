"""The files written for a prototype: one PNG and one JSON record, the same everywhere.

``protolens generate`` (local), ``protolens submit --out`` / ``get --out``,
``protolens demo`` and ``Prototype.save()`` in the SDK all name and describe a
prototype with these two functions, so a folder of prototypes reads the same
whichever way it was made (docs/prototype-files.md lists the keys):

    281-tabby_cat-0.png         the image (8-bit RGB PNG)
    281-tabby_cat-0.json        its record: target, probability, top-5, scores, provenance

Names are ``[anti-]<class indices joined by +>-<class names>-<n>``, where n is the
prototype's number within its target. No grpc or torch import: plain data in, plain
data out.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

SCHEMA = "protolens.prototype.v1"


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_")[:60] or "class"


def prototype_stem(
    classes: Sequence[int],
    class_names: Sequence[str],
    kind: str,
    target_index: int,
    units_label: str = "",
) -> str:
    """The file name without suffix, e.g. ``281-tabby_cat-0`` or ``anti-281-tabby_cat-0``;
    a unit target's is its label made safe, ``layer_features.3_channel_12-0``."""
    if units_label:
        safe = "".join(c if c.isalnum() or c in "+-_." else "_" for c in units_label)
        return f"{safe[:120]}-{int(target_index)}"
    indices = "+".join(str(int(c)) for c in classes)
    names = "+".join(_slug(n or str(c)) for c, n in zip(classes, class_names, strict=False))
    prefix = "anti-" if kind == "antitype" else ""
    return f"{prefix}{indices}-{names or 'class'}-{int(target_index)}"


# A multi-label model sees a label when its own probability is at least this.
LABEL_PRESENT = 0.5


def off_target(
    *,
    kind: str,
    classes: Sequence[int],
    top_index: int | None,
    stop_reason: str,
    multi_label: bool = False,
    probability: float = 0.0,
) -> bool:
    """True when a class prototype's model does not see its target after the optimisation
    stopped on its own (converged, or its step budget ran out): the image is no prototype
    of its target. A single-label model ranks another class first; a multi-label model
    (its labels independent, several may be present) gives the label a ``probability``
    (its own sigmoid) below ``LABEL_PRESENT``. Seen on a model fed the wrong input range
    (bench/unusual_models.py: p = 0.000, reported as a success). Never said of a run of
    fixed steps (``stop_reason == "steps"``): its length is the caller's choice."""
    if kind != "prototype" or stop_reason == "steps" or not classes:
        return False
    if multi_label:
        return float(probability) < LABEL_PRESENT
    return top_index is not None and int(top_index) != int(classes[0])


def off_target_warning(
    *,
    label: str,
    top_name: str,
    top_probability: float,
    probability: float,
    steps: int,
    spec_hint: str,
    multi_label: bool = False,
) -> str:
    """The one line both CLIs print for an ``off_target`` prototype; ``spec_hint`` says
    where that command takes the model's input spec."""
    if multi_label:
        seen = (
            f"the model gives its label p={probability:.3f} (multi-label: below "
            f"{LABEL_PRESENT}, it does not see the label; its most probable label is "
            f"{top_name!r}, p={top_probability:.3f})"
        )
    else:
        seen = (
            f"the model's top class is {top_name!r} (p={top_probability:.3f}), not the "
            f"target (p={probability:.3f})"
        )
    return (
        f"{label}: {seen} after {steps} steps; check the input spec "
        f"({spec_hint}: a model fed [0,255] needs mean 0, std 1/255 = 0.0039215686) or give "
        "more steps (max_steps)"
    )


def caveat_lines(caveats: Iterable[Mapping[str, Any]]) -> list[str]:
    """One line per distinct reference-set caveat (``{code, message, ...}`` dicts, as a
    scores dict's ``caveats`` holds them), in first-seen order: what both CLIs print
    beside scores that rest on a weak reference set (docs/scores.md, "Caveats")."""
    lines: list[str] = []
    for c in caveats:
        line = f"{c.get('code', '')}: {c.get('message', '')}"
        if line not in lines:
            lines.append(line)
    return lines


def prototype_record(
    *,
    file: str,
    classes: Sequence[int],
    class_names: Sequence[str],
    kind: str,
    target_index: int,
    probability: float,
    logit: float,
    top5: Sequence[tuple[int, str, float]],
    steps: int,
    seed: int,
    scores: Mapping[str, Any] | None,
    provenance: Mapping[str, Any],
    name: str = "",
    float_file: str = "",
    lr: float = 0.0,
    stop_reason: str = "",
    multi_label: bool = False,
) -> dict[str, Any]:
    """One prototype's JSON record (``SCHEMA``); ``scores`` is the engine's scores dict
    (docs/scores.md) or None, ``provenance`` the keys of ``PROVENANCE_KEYS``;
    ``float_file`` the lossless float32 tensor beside the PNG (``.safetensors``), if
    one was written; ``multi_label``: the probabilities are each label's own sigmoid."""
    path_similarity = scores.get("path_similarity") if scores else None
    low, high = (
        (scores.get("path_similarity_low"), scores.get("path_similarity_high"))
        if scores
        else (None, None)
    )
    return {
        "schema": SCHEMA,
        "name": name,
        "file": file,
        "float_file": float_file or None,
        "target": {
            "classes": [int(c) for c in classes],
            "class_names": list(class_names),
            "kind": kind,
        },
        "target_index": int(target_index),
        "probability": float(probability),
        "multi_label": bool(multi_label),
        "logit": float(logit),
        "top5": [{"index": int(i), "name": n, "probability": float(p)} for i, n, p in top5],
        "steps": int(steps),
        "stop_reason": stop_reason,
        "lr": float(lr),
        "seed": int(seed),
        "path_similarity": path_similarity,
        "path_similarity_interval": None if low is None or high is None else [low, high],
        "scores": dict(scores) if scores else None,
        "provenance": {key: provenance.get(key, _EMPTY.get(key, "")) for key in PROVENANCE_KEYS},
    }


_EMPTY: dict[str, Any] = {"config": {}, "seed": 0}
PROVENANCE_KEYS = (
    "model",
    "model_digest",
    "engine_version",
    "config",
    "seed",
    "reference_set",
    "reference_digest",
    "cache_key",
)
