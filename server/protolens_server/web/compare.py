"""The side-by-side view of a check: two versions of a model, flagged classes first.

Built from the check's JSON report (``GetCheckReport``: the facts ``checks/result.py``
writes), with each class's prototype images found in the check's own jobs
(``GetJob``: the job of a class's prototypes, and its position there), and the
entanglement graph drawn by the check report's own ``checks.svg.entanglement_svg``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from protolens.types import Job

from protolens_server.web.api import interval_of


@dataclass(frozen=True)
class Edge:
    """An entanglement edge, as ``entanglement_svg`` reads it."""

    source: int
    target: int
    probability: float


@dataclass
class GraphClass:
    """The attributes of ``checks.result.ClassCheck`` that ``entanglement_svg`` draws."""

    class_index: int
    name: str
    flags: list[str]
    baseline: bool
    entangled: list[Edge]
    baseline_entangled: list[Edge]
    lost: list[int]


@dataclass
class Side:
    """One version's prototype of a class: image link and numbers."""

    probability: float | None
    path_similarity: float | None
    path_similarity_interval: tuple[float, float] | None
    job_id: str
    index: int | None  # the prototype's position in its job (None: not found)

    @property
    def href(self) -> str:
        """Its prototype page ("" when the job no longer lists it)."""
        return f"/jobs/{self.job_id}/prototypes/{self.index}" if self.index is not None else ""


@dataclass
class ClassRow:
    index: int
    name: str
    flags: list[str]
    new: Side
    baseline: Side | None
    drift: float | None
    drift_interval: tuple[float, float] | None
    confidence_change: float | None
    path_similarity_change: float | None
    path_similarity_change_interval: tuple[float, float] | None
    new_in_baseline_model: float | None
    baseline_in_new_model: float | None
    entangled: list[str] = field(default_factory=list)
    gained: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)


@dataclass
class CheckView:
    passed: bool
    model: str
    baseline: str
    rules: list[dict[str, Any]]
    rows: list[ClassRow]  # flagged first, then by class index
    graph_svg: str
    layers: list[str]
    layer_rows: list[tuple[str, list[float | None]]]
    layer_measure: str  # "drift" (0 = same, 1 = another class), or an older report's "similarity"


def job_ids(report: Mapping[str, Any]) -> list[str]:
    """Every job the report's prototypes came from."""
    ids = []
    for c in report.get("classes", []):
        for side in ("new", "baseline"):
            job = (c.get(side) or {}).get("job")
            if job and job not in ids:
                ids.append(job)
    return ids


def _position(job: Job | None, class_index: int) -> int | None:
    """Where the first prototype of ``class_index`` sits in ``job``."""
    if job is None:
        return None
    for s in job.prototypes:
        if tuple(s.target.classes) == (class_index,) and s.target_index == 0:
            return s.index
    return None


def _side(data: Mapping[str, Any] | None, cls: int, jobs: Mapping[str, Job]) -> Side | None:
    if not data:
        return None
    job_id = str(data.get("job") or "")
    return Side(
        probability=data.get("probability"),
        path_similarity=data.get("path_similarity"),
        path_similarity_interval=interval_of(data, "path_similarity"),
        job_id=job_id,
        index=_position(jobs.get(job_id), cls),
    )


def check_view(report: Mapping[str, Any], jobs: Mapping[str, Job]) -> CheckView:
    from protolens_server.checks.svg import entanglement_svg

    names = {int(c["class"]): str(c["name"]) for c in report.get("classes", [])}
    rows, graph = [], []
    for c in report.get("classes", []):
        cls, ent = int(c["class"]), c.get("entanglement") or {}
        cross = c.get("cross_scores") or {}
        new = _side(c.get("new"), cls, jobs) or Side(None, None, None, "", None)
        rows.append(
            ClassRow(
                index=cls,
                name=str(c["name"]),
                flags=list(c.get("flags") or []),
                new=new,
                baseline=_side(c.get("baseline"), cls, jobs),
                drift=c.get("drift"),
                drift_interval=interval_of(c, "drift"),
                confidence_change=c.get("confidence_change"),
                path_similarity_change=c.get("path_similarity_change"),
                path_similarity_change_interval=interval_of(c, "path_similarity_change"),
                new_in_baseline_model=cross.get("new_prototype_in_baseline_model"),
                baseline_in_new_model=cross.get("baseline_prototype_in_new_model"),
                entangled=[_name(names, e["target"]) for e in ent.get("new", [])],
                gained=[_name(names, t) for t in ent.get("gained", [])],
                lost=[_name(names, t) for t in ent.get("lost", [])],
            )
        )
        graph.append(
            GraphClass(
                class_index=cls,
                name=str(c["name"]),
                flags=list(c.get("flags") or []),
                baseline=c.get("baseline") is not None,
                entangled=_edges(ent.get("new", [])),
                baseline_entangled=_edges(ent.get("baseline", [])),
                lost=[int(t) for t in ent.get("lost", [])],
            )
        )
    rows.sort(key=lambda r: (not r.flags, r.index))
    with_layers = [c for c in report.get("classes", []) if _layer_drift(c)]
    layers = list(_layer_drift(with_layers[0])) if with_layers else []
    return CheckView(
        passed=bool(report.get("passed")),
        model=str((report.get("model") or {}).get("ref", "")),
        baseline=str((report.get("baseline") or {}).get("ref", "")),
        rules=sorted(report.get("rules", []), key=lambda r: r.get("status") != "fail"),
        rows=rows,
        graph_svg=entanglement_svg(graph) if graph else "",  # type: ignore[arg-type]
        layers=layers,
        layer_rows=[
            (str(c["name"]), [_layer_drift(c).get(n) for n in layers]) for c in with_layers
        ],
        layer_measure="drift" if with_layers and "layer_drift" in with_layers[0] else "similarity",
    )


def _layer_drift(c: Mapping[str, Any]) -> Mapping[str, float | None]:
    """Per-layer drift of a class (``layer_similarity`` in reports before intervals)."""
    return c.get("layer_drift") or c.get("layer_similarity") or {}


def _edges(items: Sequence[Mapping[str, Any]]) -> list[Edge]:
    return [Edge(int(e["source"]), int(e["target"]), float(e["probability"])) for e in items]


def _name(names: Mapping[int, str], index: Any) -> str:
    return names.get(int(index), str(index))
