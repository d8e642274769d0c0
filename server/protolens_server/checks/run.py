"""``run_check``: generate (or reuse) prototypes of a model version and its baseline, compare
them, apply a policy.

    result = run_check("vision@2", baseline="vision@1", catalog=catalog,
                       policy=Policy.from_yaml("policy.yaml"))
    result.passed, result.flagged, result.to_dict()

Reads top to bottom: open both models -> pair their classes (by name where both carry
names: ``checks.matching``) -> resolve classes -> generate each version's prototypes
chunk by chunk (the local cache folder, keyed like the
queue's cache, makes a re-check of an unchanged version free) -> ``analyse``
(drift, cross-scores, entanglement, policy) -> the flagged classes again on more
prototypes and ``analyse`` once more (``checks.confirmation``). The service runs the
same ``analyse`` and confirmation on prototypes its workers made (``checks.service``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from protolens_server.checks import comparison, entanglement
from protolens_server.checks.confirmation import (
    Confirmation,
    classes_to_confirm,
    confirmation_config,
    merged,
)
from protolens_server.checks.local_cache import LocalGenerator
from protolens_server.checks.matching import (
    ClassMatch,
    classes_per_version,
    match_classes,
    refuse_numbered_folders,
)
from protolens_server.checks.policy import (
    Policy,
    attribute_claims,
    drift_spread,
    evaluate,
    flags_for,
)
from protolens_server.checks.prototypes import (
    DEFAULT_CHUNK,
    ClassPrototypes,
    GenerationStats,
    check_spec,
    chunks,
)
from protolens_server.checks.result import CheckResult, ClassCheck, ModelRef
from protolens_server.engine.types import GenerationConfig
from protolens_server.errors import GenerationCancelled, InvalidArgument
from protolens_server.models import resolve_class
from protolens_server.scores.naming import class_folders

if TYPE_CHECKING:
    import torch

    from protolens_server.models.catalog import ModelCatalog
    from protolens_server.models.handle import ModelHandle
    from protolens_server.scores.references import ReferenceSet

Progress = Callable[[float, str], None]


def open_model(
    ref: ModelHandle | str, catalog: ModelCatalog | None = None
) -> tuple[ModelHandle, str]:
    """A handle and its display name from a handle, a catalog name, or a ``load_model`` ref."""
    if not isinstance(ref, str):
        return ref, getattr(ref, "name", "model")
    if catalog is not None:
        return catalog.load(ref), catalog.resolve(ref)
    from protolens_server.models import load_model

    return load_model(ref), ref


PREVIOUS = "previous"  # a baseline: the version registered before the checked one


def resolve_baseline(
    model: ModelHandle | str,
    baseline: ModelHandle | str | None,
    catalog: ModelCatalog | None = None,
) -> ModelHandle | str | None:
    """``baseline`` itself, or for ``"previous"`` the version registered before ``model``'s:
    from the catalog (``ModelCatalog.previous``: store versions or MLflow), or from MLflow
    for a ``models:/`` ref without a catalog."""
    if baseline != PREVIOUS:
        return baseline
    if catalog is not None and isinstance(model, str):
        return catalog.previous(model)
    if isinstance(model, str) and model.strip().startswith("models:/"):
        from protolens_server.models import mlflow

        return mlflow.previous(model.strip())
    raise InvalidArgument(
        "baseline",
        "'previous' needs a registered model: a model store name (--model-store) or an "
        "MLflow models:/NAME/VERSION",
    )


def resolve_classes(handle: ModelHandle, classes: Sequence[int | str] | None) -> list[int]:
    if not classes:
        return list(range(handle.num_classes))
    out = [resolve_class(handle, c, field="classes") for c in classes]
    return sorted(dict.fromkeys(out))


def run_check(
    model: ModelHandle | str,
    *,
    baseline: ModelHandle | str | None = None,
    catalog: ModelCatalog | None = None,
    classes: Sequence[int | str] | None = None,
    config: GenerationConfig | None = None,
    seed: int = 0,
    reference: ReferenceSet | str | Path | None = None,
    policy: Policy | None = None,
    cache_dir: str | Path | None = None,
    device: str = "cpu",
    chunk_size: int = DEFAULT_CHUNK,
    on_progress: Progress | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> CheckResult:
    """Check ``model`` (a handle, a catalog name like ``vision@2``, or a ``load_model`` ref)."""
    config = config or GenerationConfig()
    policy = policy or Policy()
    baseline = resolve_baseline(model, baseline, catalog)
    new, new_name = open_model(model, catalog)
    old, old_name = open_model(baseline, catalog) if baseline is not None else (None, "")
    match = check_compatible(new, old, policy)
    wanted = resolve_classes(new, classes)
    refset = None
    if reference is not None:
        from protolens_server.scores.scoring import open_reference

        refset = open_reference(new, reference)
        if old is not None and refset.root is not None:
            folders = [f.name for f in class_folders(refset.root)]
            where = f"the reference folder {refset.root}"
            refuse_numbered_folders(
                folders, match, new.class_names, old.class_names, where=where, field="reference"
            )
        refset.require(wanted, new.class_names)
    # the baseline scores against the same images under its own indices of their classes
    old_refset = (
        refset.reindexed(match.baseline_of) if refset is not None and match is not None else refset
    )
    stats = GenerationStats()
    # each version with its references and how its classes are reached from the model's
    # (None: the model's own indices; the baseline's: ``match``)
    versions: list[tuple[str, ModelHandle, ReferenceSet | None, ClassMatch | None]] = [
        (new_name, new, refset, None)
    ]
    if old is not None:
        versions.append((old_name, old, old_refset, match))

    def produce(
        classes: list[int], cfg: GenerationConfig, phase: str = ""
    ) -> list[dict[int, ClassPrototypes]]:
        own = classes_per_version(classes, match)
        units = sum(len(chunks(c, chunk_size)) for c in own)
        done = 0
        produced: list[dict[int, ClassPrototypes]] = []
        for (name, handle, references, pairing), mine in zip(versions, own, strict=True):
            generator = LocalGenerator(cache_dir, device=device, reference=references)
            by_class: dict[int, ClassPrototypes] = {}
            for chunk in chunks(mine, chunk_size):
                if should_stop is not None and should_stop():
                    raise GenerationCancelled("the check was cancelled")
                spec = check_spec(
                    name,
                    handle.digest,
                    chunk,
                    cfg,
                    seed,
                    reference_digest=references.digest if references is not None else "",
                )

                def step(s: int, total: int, name: str = name, done: int = done) -> None:
                    if on_progress is not None:
                        on_progress((done + s / max(1, total)) / units, f"{phase}generating {name}")

                for cp in generator.run(handle, spec, on_progress=step, should_stop=should_stop):
                    by_class[cp.class_index] = cp
                stats.add(by_class[chunk[0]].cache_hit, by_class[chunk[0]].job_id)
                done += 1
                if on_progress is not None:
                    on_progress(done / units, f"{phase}generated {name}")
            produced.append(by_class if pairing is None else pairing.to_model(by_class))
        return produced

    def compare(produced: list[dict[int, ClassPrototypes]]) -> CheckResult:
        if on_progress is not None:
            on_progress(1.0, "comparing")
        return analyse(
            new,
            produced[0],
            baseline_model=old,
            baseline_prototypes=produced[1] if old is not None else None,
            match=match,
            policy=policy,
            model_ref=ModelRef(new_name, new.digest, getattr(new, "source", "")),
            baseline_ref=(
                ModelRef(old_name, old.digest, getattr(old, "source", "")) if old else None
            ),
            config=config,
            seed=seed,
            stats=stats,
            reference_digest=refset.digest if refset is not None else "",
        )

    first = produce(wanted, config)
    result = compare(first)
    confirm = classes_to_confirm(result.classes, config)
    if not confirm:
        return result
    again = produce(confirm, confirmation_config(config), "confirming flags: ")
    confirmed = compare([merged(a, b) for a, b in zip(first, again, strict=True)])
    confirmed.confirmation = Confirmation.of(result.classes, confirm)
    return confirmed


def check_compatible(
    new: ModelHandle, old: ModelHandle | None, policy: Policy | None = None
) -> ClassMatch | None:
    """How the two versions' classes pair (``checks.matching``, as the policy's
    ``match_classes`` says); None without a baseline. ``InvalidArgument`` when they cannot,
    or when one version's prototypes cannot be shown to the other (``comparison.fitted``:
    any input size, and one or three channels for the other's three or one, can)."""
    if old is None:
        return None
    a, b = new.input_spec.channels, old.input_spec.channels
    if not comparison.fittable(a, b):
        raise InvalidArgument(
            "baseline",
            f"takes {b}-channel images and the model {a}-channel ones; a check shows each "
            "version's prototypes to the other, which works for the same channels, or one "
            "and three (grey and colour); check against a version with the model's input",
        )
    return match_classes(new, old, (policy or Policy()).match_classes)


def analyse(
    model: ModelHandle,
    prototypes: Mapping[int, ClassPrototypes],
    *,
    baseline_model: ModelHandle | None = None,
    baseline_prototypes: Mapping[int, ClassPrototypes] | None = None,
    match: ClassMatch | None = None,
    policy: Policy,
    model_ref: ModelRef,
    baseline_ref: ModelRef | None,
    config: GenerationConfig,
    seed: int,
    stats: GenerationStats,
    reference_digest: str = "",
) -> CheckResult:
    """Compare, build the entanglement graphs and apply ``policy`` (no generation here).

    ``baseline_prototypes`` are keyed by the model's index of their class (``match``: how
    the classes pair, by index when None); a class the baseline lacks is checked alone."""
    names = tuple(model.class_names) or tuple(f"class {i}" for i in range(model.num_classes))
    if baseline_model is not None and match is None:
        match = ClassMatch.identity(model.num_classes)
    kw = {"threshold": policy.entanglement_threshold, "top_k": policy.entanglement_top_k}
    ordered = sorted(prototypes)
    new_scale, old_scale = comparison.reading_scales(model, baseline_model)
    new_probs = {
        c: comparison.probabilities(model, prototypes[c].images, new_scale) for c in ordered
    }
    new_graph = entanglement.graph(new_probs, **kw)
    old_graph: dict[int, list[entanglement.Edge]] = {}
    old_probs: dict[int, torch.Tensor] = {}
    drifts: dict[int, comparison.Drift] = {}
    if baseline_model is not None and baseline_prototypes is not None and match is not None:
        paired = [c for c in ordered if c in baseline_prototypes]
        # each baseline row re-ordered into the model's classes, so both graphs speak of the
        # same classes by the same indices (checks/matching.py)
        old_probs = {
            c: match.to_model_columns(
                comparison.probabilities(baseline_model, baseline_prototypes[c].images, old_scale)
            )
            for c in paired
        }
        old_graph = entanglement.graph(old_probs, **kw)
        drifts = comparison.drifts(
            model,
            {c: baseline_prototypes[c].images for c in paired},
            {c: prototypes[c].images for c in paired},
            seed=seed,
        )
    checks = []
    for c in ordered:
        item = ClassCheck(c, names[c], prototypes[c], entangled=new_graph[c])
        item.confidence = float(new_probs[c][:, c].mean())
        if baseline_model is not None and c in old_probs:
            old_images, new_images = baseline_prototypes[c].images, prototypes[c].images
            d = drifts[c]
            item.baseline = baseline_prototypes[c]
            item.baseline_class_index = match.baseline_of[c]
            item.drift, item.layer_drift = d.drift, d.layers
            item.drift_interval = None if d.low is None else (d.low, d.high)
            old_in_new = comparison.probabilities(model, old_images, new_scale).mean(0)
            item.baseline_by_new_model = float(old_in_new[c])
            item.baseline_top_in_new_model = int(old_in_new.argmax())
            item.new_by_baseline_model = comparison.target_probability(
                baseline_model, new_images, match.baseline_of[c], old_scale
            )
            item.baseline_entangled = old_graph[c]
            gained, lost = entanglement.changed(
                old_graph[c],
                new_graph[c],
                old_probs[c],
                new_probs[c],
                threshold=policy.entanglement_threshold,
            )
            item.gained, item.lost = sorted(gained), sorted(lost)
        checks.append(item)
    spread = drift_spread(checks)
    for item in checks:
        item.drift_z = spread.z.get(item.class_index) if spread else None
    attribute_claims(checks, policy, len(names))
    for item in checks:
        item.flags = flags_for(item, policy, item.drift_z, len(names))
    rules = evaluate(
        policy,
        checks,
        has_baseline=baseline_model is not None,
        resolve=lambda v: resolve_class(model, v, field="policy.forbidden_entanglements"),
        names=names,
        class_names=(
            model.given_class_names,
            baseline_model.given_class_names if baseline_model is not None else (),
        ),
        match=match,
    )
    for rule in rules:
        if rule.status == "fail":
            for item in checks:
                if item.name in rule.classes and f"policy:{rule.rule}" not in item.flags:
                    item.flags.append(f"policy:{rule.rule}")
    return CheckResult(
        model=model_ref,
        baseline=baseline_ref,
        classes=checks,
        rules=rules,
        config=config.to_dict(),
        seed=seed,
        class_names=names,
        entanglement_threshold=policy.entanglement_threshold,
        entanglement_top_k=policy.entanglement_top_k,
        generation=stats,
        reference_digest=reference_digest,
        class_match=(
            match.to_dict(names, baseline_model.class_names)
            if match is not None and baseline_model is not None
            else None
        ),
    )
