"""``generate``: plan the batch, optimise it chunk by chunk, report progress, return prototypes.

Reads top to bottom: validate targets and seeds -> one item per prototype
(target-major) -> pack items into chunks of at most ``config.max_batch`` images (0: as many
as fit the device's memory budget, ``_memory``; the prototypes of a target stay
together when the diversity term couples them) -> optimise each chunk, halving
the chunk size on out-of-memory -> prototypes in output order.

Every image has its own generator (init noise, then its transform draws), and
its loss depends only on itself (and, through diversity, its target's other
prototypes), so a prototype is the same whether it runs alone or in a batch.
The step never waits on the host: probabilities are read, and NaNs checked,
only every ``config.progress_every`` steps and at the end; the smoothed losses
that decide convergence (``_stopping``) every ``CHECK_EVERY`` steps. The
learning rate is per image (``_optim``), so images stop and cool down on their
own schedule; with ``config.lr = 0`` it is found per model first (``_lr_finder``).
"""

from __future__ import annotations

import weakref
from collections import deque
from collections.abc import Callable, Iterator, MutableMapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

import torch

from protolens_server.errors import (
    GenerationCancelled,
    GenerationDiverged,
    InvalidArgument,
    UnknownClass,
)

from . import _lr_finder
from . import _objectives as obj
from ._alpha import AlphaParam, alpha_mean
from ._baseline import baselines_for
from ._forward import ModelRunner
from ._logit_scale import penalty_unit, runner_spread
from ._memo import memo_of
from ._memory import (
    CPU_AUTO_BATCH,
    CPU_VALUES_PER_THREAD,
    DEFAULT_MEMORY_BUDGET,
    PROBE_SIZES,
    AutoBatch,
    MemoryFit,
    check_budget,
    chunk_size,
    cpu_chunk_cap,
    fit_peaks,
    headroom_bytes,
)
from ._optim import PerImageAdam
from ._param import PERTURBATION_SD, ImageParam, config_param, param_shape
from ._probes import LayerProbe, has_batchnorm
from ._readout import class_objective, is_multi_label, probabilities
from ._seeds import generator, per_target_seeds, prototype_seed
from ._stopping import StopSchedule, confident
from ._transforms import DrawStream, preset
from ._units import UnitProbe, check_units, has_units
from .types import (
    GenerationConfig,
    ImageClassifier,
    ProgressEvent,
    Prototype,
    Target,
)

# The high-frequency penalty is the mean neighbour difference (about 0.02-0.1 for
# natural images) times this, so ``config.hf_penalty`` is in logit units.
HF_SCALE = 10.0
DEFAULT_CONFIG = GenerationConfig()


@dataclass(frozen=True)
class _Item:
    """One prototype to generate."""

    position: int  # in the output list
    group: int  # which target (index into ``targets``)
    target: Target
    index: int  # prototype number within its target
    call_seed: int  # the target's seed (keys the equidistant baseline)
    seed: int  # this prototype's own seed


def generate(
    model: ImageClassifier,
    targets: Sequence[int | Sequence[int] | Target],
    config: GenerationConfig = DEFAULT_CONFIG,
    *,
    seed: int | Sequence[int] = 0,
    device: str | torch.device = "cpu",
    on_progress: Callable[[ProgressEvent], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    compile: bool = False,
    memory_budget: float = DEFAULT_MEMORY_BUDGET,
    on_oom_split: Callable[[int, int], None] | None = None,
    fold_batchnorm: bool = True,
    lr_cache: MutableMapping[str, float] | None = None,
    cpu_chunk_values: int = CPU_VALUES_PER_THREAD,
) -> list[Prototype]:
    """Generate ``config.prototypes`` prototypes per target, target-major.

    ``seed`` is one integer for the call or one per target. Raises
    ``UnknownClass`` for a class the model does not have, ``GenerationCancelled``
    when ``should_stop()`` turns true between steps, and ``GenerationDiverged``
    when the optimisation produces NaN/Inf.

    Execution options (no effect on the result beyond float rounding, so not part
    of ``config`` or of a cache key): ``compile`` runs the step's forward through
    ``torch.compile`` (eager, with a ``RuntimeWarning``, if compiling fails);
    ``memory_budget`` is the fraction of the device's memory that chunks may fill
    when ``config.max_batch`` is 0 (CUDA only). ``on_oom_split(images, limit)`` is
    called when a chunk of ``images`` ran out of memory and is retried in chunks of at
    most ``limit`` (a worker counts these). ``fold_batchnorm`` folds eval-mode
    BatchNorm layers into the convolutions before them, on a copy of the model
    (``_fold.py``: the same function, a faster step; off where the model cannot be
    traced, and for calls that couple prototypes with the diversity term).
    ``cpu_chunk_values``: on the CPU a chunk holds at most this many input values per
    torch thread (``_memory.cpu_chunk_cap``; 0 lifts the cap, for benchmarks).

    With ``config.lr = 0`` the rate comes from the learning-rate finder, memoised per
    model in process; ``lr_cache`` (keys from ``lr_key``, scoped by the caller to this
    model's weights) lets a caller share the choice between processes.
    """
    check_budget(memory_budget)
    resolved = [Target.of(t) for t in targets]
    _check_classes(resolved, model.num_classes)
    check_units(model, resolved)
    seeds = per_target_seeds(seed, len(resolved))
    items = [
        _Item(g * config.prototypes + i, g, t, i, seeds[g], prototype_seed(seeds[g], t, i))
        for g, t in enumerate(resolved)
        for i in range(config.prototypes)
    ]
    if not items:
        return []
    coupled = config.diversity > 0 and config.prototypes > 1
    units = _units(items, coupled)
    progress = _Progress(len(items), config.step_budget, on_progress)
    with _chunker(
        model, config, device, compile, progress, should_stop, fold_batchnorm, resolved
    ) as chunk:
        limit = config.max_batch or _auto_limit(chunk, items, memory_budget).size
        limit = _cpu_capped(chunk, limit, cpu_chunk_values)
        chunk.lr = config.lr or _found_lr(chunk, limit, lr_cache)
        progress.lr = chunk.lr
        results = _run_all(chunk, units, limit, on_oom_split)
    return [results[item.position] for item in items]


def auto_batch_size(
    model: ImageClassifier,
    config: GenerationConfig = DEFAULT_CONFIG,
    *,
    images: int = 1024,
    device: str | torch.device = "cpu",
    compile: bool = False,
    memory_budget: float = DEFAULT_MEMORY_BUDGET,
) -> AutoBatch:
    """The chunk size ``generate`` picks with ``max_batch=0`` for a call of ``images``
    prototypes of this model and config, with the memory fit it comes from (CUDA; on
    other devices the fixed ``CPU_AUTO_BATCH``), held to the CPU chunk cap as ``generate``
    holds it. Runs the same probe, memoised alike."""
    check_budget(memory_budget)
    if images < 1:
        raise InvalidArgument("images", f"must be >= 1 (got {images})")
    target = Target((0,))
    items = [_Item(k, k, target, 0, k, prototype_seed(k, target, 0)) for k in range(images)]
    progress = _Progress(images, config.step_budget, None)
    with _chunker(model, config, device, compile, progress, None) as chunk:
        auto = _auto_limit(chunk, items, memory_budget)
        return replace(auto, size=_cpu_capped(chunk, auto.size))  # as generate caps it


@contextmanager
def _chunker(
    model: ImageClassifier,
    config: GenerationConfig,
    device: str | torch.device,
    compile: bool,
    progress: _Progress,
    should_stop: Callable[[], bool] | None,
    fold_batchnorm: bool = True,
    targets: Sequence[Target] = (),
) -> Iterator[_Chunk]:
    """The per-call machinery: model runner, layer hooks, objective settings."""
    coupled = config.diversity > 0 and config.prototypes > 1
    # Folding BatchNorm is exact up to float rounding; the diversity term reads a mid
    # convolution's raw output, which folding would change, so coupled calls keep it.
    # Unit objectives hook the model's own layers (folding and compiling rewrite them).
    units = has_units(targets)
    fold = fold_batchnorm and not coupled and not units
    compile = compile and not units
    runner = ModelRunner(model, config, torch.device(device), compile=compile, fold_batchnorm=fold)
    use_bn = config.bn_prior > 0 and has_batchnorm(runner.module)
    # the unit probe first: it measures its layers' spread before the layer probe listens
    with (
        UnitProbe(runner.module, targets, model) as unit_probe,
        LayerProbe(runner.module, batchnorm=use_bn, features=coupled) as probe,
    ):
        yield _Chunk(runner, config, probe, progress, should_stop, unit_probe)


def _check_classes(targets: list[Target], num_classes: int) -> None:
    for t in targets:  # a unit target has no classes (check_units checks its units)
        for c in t.classes:
            if not 0 <= c < num_classes:
                raise UnknownClass(
                    "targets",
                    f"class {c} is out of range: the model has {num_classes} classes "
                    f"(0..{num_classes - 1})",
                )


def _units(items: list[_Item], coupled: bool) -> list[list[_Item]]:
    """Items that must share a chunk: a target's prototypes when diversity couples them."""
    if not coupled:
        return [[item] for item in items]
    by_group: dict[int, list[_Item]] = {}
    for item in items:
        by_group.setdefault(item.group, []).append(item)
    return list(by_group.values())


def _run_all(
    chunk: _Chunk,
    units: list[list[_Item]],
    max_batch: int,
    on_oom_split: Callable[[int, int], None] | None = None,
) -> dict[int, Prototype]:
    """Optimise every unit in chunks of at most ``limit`` images; halve ``limit`` on OOM."""
    results: dict[int, Prototype] = {}
    pending = deque(units)
    limit = max_batch
    while pending:
        batch = [pending.popleft()]
        while pending and sum(map(len, batch)) + len(pending[0]) <= limit:
            batch.append(pending.popleft())
        items = [item for unit in batch for item in unit]
        prototypes: list[Prototype] | None
        try:
            prototypes = chunk.run(items)
        except torch.OutOfMemoryError:
            if len(batch) == 1:
                raise
            prototypes = None
        if prototypes is None:
            # outside the except block, so the failed chunk's tensors (held by the
            # traceback) are already released when the cache is emptied
            limit = max(1, len(items) // 2)
            if on_oom_split is not None:
                on_oom_split(len(items), limit)
            pending.extendleft(reversed(batch))
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            continue
        results.update(zip((item.position for item in items), prototypes, strict=True))
    return results


# Learning rates the finder chose, per model (weakly held) and ``lr_key``.
_lrs: weakref.WeakKeyDictionary[Any, dict[str, float]] = weakref.WeakKeyDictionary()


def lr_key(model: ImageClassifier, config: GenerationConfig, device: str | torch.device) -> str:
    """What the finder's choice for ``model`` depends on besides its weights (a string a
    caller can key a shared cache with, next to the weights' digest)."""
    return _lr_finder.lr_key(
        model.input_spec,
        model.num_classes,
        torch.device(device).type,
        config,
        multi_label=is_multi_label(model),
    )


def find_lr(
    model: ImageClassifier,
    config: GenerationConfig = DEFAULT_CONFIG,
    *,
    device: str | torch.device = "cpu",
    fold_batchnorm: bool = True,
    lr_cache: MutableMapping[str, float] | None = None,
) -> float:
    """The learning rate ``generate`` uses for ``model`` and ``config`` when
    ``config.lr`` is 0 (memoised like it; ``_lr_finder``)."""
    progress = _Progress(1, config.step_budget, None)
    with _chunker(model, config, device, False, progress, None, fold_batchnorm) as chunk:
        return _found_lr(chunk, _cpu_capped(chunk, config.max_batch or CPU_AUTO_BATCH), lr_cache)


def probe_lr(
    model: ImageClassifier,
    config: GenerationConfig = DEFAULT_CONFIG,
    *,
    classes: int = 0,
    seeds: Sequence[int] = (),
    rates: Sequence[float] = (),
    device: str | torch.device = "cpu",
) -> _lr_finder.LrProbe:
    """What the finder measures, for inspection (``bench/finder_probe.py``): the probes'
    losses and scores per rate of ``rates`` (empty: the finder's grid) on ``classes``
    probe classes (0: the finder's own count) from the starts of ``seeds`` (empty: the
    finder's own) and the rate its rule picks. Not memoised; ``find_lr`` is what
    ``generate`` uses."""
    progress = _Progress(1, config.step_budget, None)
    grid = tuple(rates) or _lr_finder.GRID
    with _chunker(model, config, device, False, progress, None, True) as chunk:
        probed = _lr_finder.probe_classes(chunk.runner.num_classes, classes)
        limit = _cpu_capped(chunk, config.max_batch or CPU_AUTO_BATCH)
        traces = _probe(chunk, grid, limit, probed, seeds or _lr_finder.PROBE_SEEDS)
    return _lr_finder.inspect(probed, seeds or _lr_finder.PROBE_SEEDS, traces, grid)


def _found_lr(chunk: _Chunk, limit: int, shared: MutableMapping[str, float] | None) -> float:
    runner = chunk.runner
    key = _lr_finder.lr_key(
        runner.spec,
        runner.num_classes,
        runner.device.type,
        chunk.config,
        multi_label=runner.multi_label,
    )
    memo = memo_of(_lrs, runner.source, dict)
    if key not in memo and shared is not None and key in shared:
        memo[key] = float(shared[key])
    if key not in memo:
        memo[key] = _lr_finder.find_lr(lambda grid: _probe(chunk, grid, limit))
    if shared is not None and key not in shared:
        shared[key] = memo[key]
    return memo[key]


def _probe(
    chunk: _Chunk,
    grid: Sequence[float],
    limit: int,
    classes: Sequence[int] | None = None,
    seeds: Sequence[int] | None = None,
) -> list[list[list[float]]]:
    """Every step's loss of the ``PROBE_STEPS``-step probes, ``[rate][probe][step]``: every
    rate of ``grid`` on the same probes (each probe class with each seed's perturbation
    of the start and transform draws, class major: probe ``c * len(seeds) + s``), one
    item per rate and probe. Every probe starts from call seed 0's equidistant baseline:
    the one ``generate`` with seed 0 reuses (memoised), made alone as it always was."""
    if classes is None:
        classes = _lr_finder.probe_classes(chunk.runner.num_classes)
    if seeds is None:
        seeds = _lr_finder.PROBE_SEEDS
    starts = [(Target((c,)), s) for c in classes for s in seeds]
    items = [
        _Item(k, r, t, 0, 0, prototype_seed(s, t, 0))
        for k, (r, (t, s)) in enumerate((r, ts) for r in range(len(grid)) for ts in starts)
    ]
    rates = [grid[item.group] for item in items]
    probe_config = chunk.config.replace(steps=_lr_finder.PROBE_STEPS, diversity=0.0)
    traces: list[list[float]] = []
    at, limit = 0, max(1, limit)
    while at < len(items):  # in chunks of at most ``limit``, halved on OOM as in _run_all
        part = items[at : at + limit]
        lr = torch.tensor(rates[at : at + limit], device=chunk.runner.device)
        try:
            _, schedule = chunk.optimise(part, lr, probe_config, report=False, trace=True)
        except torch.OutOfMemoryError:
            if limit == 1:
                raise
            schedule = None
        if schedule is None:  # (outside the except block: the failed chunk is released)
            limit = max(1, limit // 2)
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            continue
        assert schedule.trace is not None
        traces += torch.stack(schedule.trace, dim=1).tolist()  # (images, steps)
        at += len(part)
    n = len(starts)
    return [traces[r * n : (r + 1) * n] for r in range(len(grid))]


# Memory fits per model (weakly held) and memory-relevant settings.
_fits: weakref.WeakKeyDictionary[Any, dict[tuple[Any, ...], MemoryFit]] = (
    weakref.WeakKeyDictionary()
)


def _auto_limit(chunk: _Chunk, items: list[_Item], memory_budget: float) -> AutoBatch:
    """``max_batch = 0``: the chunk size that fits the memory budget (``_memory``)."""
    device = chunk.runner.device
    if device.type != "cuda":
        return AutoBatch(min(CPU_AUTO_BATCH, len(items)))
    if len(items) <= PROBE_SIZES[-1]:
        return AutoBatch(len(items))  # probing would cost as much as running
    fit = _memory_fit(chunk, items)
    free, total = torch.cuda.mem_get_info(device)
    headroom = headroom_bytes(
        total=total,
        free=free,
        reserved=torch.cuda.memory_reserved(device),
        allocated=torch.cuda.memory_allocated(device),
        budget=memory_budget,
    )
    if fit is None:  # even the smallest probe ran out of memory
        return AutoBatch(1, None, headroom)
    return AutoBatch(chunk_size(fit, headroom, cap=len(items)), fit, headroom)


def _cpu_capped(chunk: _Chunk, limit: int, per_thread: int = CPU_VALUES_PER_THREAD) -> int:
    """``limit``, held on the CPU to the chunk that stays out of memory-bound territory
    (``_memory.cpu_chunk_cap``: ``per_thread`` input values per torch thread; 0: no cap)."""
    if chunk.runner.device.type != "cpu" or per_thread == 0:
        return limit
    spec = chunk.runner.spec
    values = spec.channels * spec.height * spec.width
    return min(limit, cpu_chunk_cap(values, torch.get_num_threads(), per_thread))


def _memory_fit(chunk: _Chunk, items: list[_Item]) -> MemoryFit | None:
    runner, config = chunk.runner, chunk.config
    key = (
        str(runner.device),
        runner.spec,
        runner.num_classes,
        runner.autocast,
        runner.channels_last,
        runner.compiled,
        chunk.probe.want_bn,
        chunk.probe.want_features,
        config.parameterisation,
        config.decorrelate,
        config.transforms,
        config.hf_penalty > 0,
    )
    fits = memo_of(_fits, runner.module, dict)
    if key not in fits:
        probes: list[tuple[int, int]] = []
        for n in PROBE_SIZES:
            try:
                probes.append((n, chunk.step_peak_bytes(items[:n])))
            except torch.OutOfMemoryError:
                break
        chunk.probe.take()  # whatever a failed probe recorded
        torch.cuda.empty_cache()
        if not probes:
            return None
        fits[key] = fit_peaks(probes)
    return fits[key]


class _Progress:
    """Latest target probability of every prototype, and the mean steps done."""

    def __init__(
        self, n_items: int, steps: int, callback: Callable[[ProgressEvent], None] | None
    ) -> None:
        self.probabilities = [0.0] * n_items
        self.steps_done = [0] * n_items
        self.reasons = [""] * n_items
        self.total_steps = steps
        self.callback = callback
        self.lr = 0.0

    def begin(self) -> None:
        """Step 0, once per call: the starting point is ready and the optimisation begins."""
        if self.callback is not None and not any(self.steps_done):
            self._send(0)

    def update(
        self, items: list[_Item], step: int, probabilities: list[float], schedule: StopSchedule
    ) -> None:
        for k, (item, p) in enumerate(zip(items, probabilities, strict=True)):
            done = schedule.steps_of(k)
            self.probabilities[item.position] = p
            self.steps_done[item.position] = min(step, done)
            self.reasons[item.position] = schedule.reasons[k] if step >= done else ""
        if self.callback is not None:
            self._send(sum(self.steps_done) // len(self.steps_done))

    def _send(self, step: int) -> None:
        assert self.callback is not None
        self.callback(
            ProgressEvent(
                step,
                self.total_steps,
                tuple(self.probabilities),
                lr=self.lr,
                stop_reasons=tuple(self.reasons),
            )
        )


def _step_draws(draws: DrawStream, copies: int) -> torch.Tensor:
    """One step's transform draws, (copies, N, per_step): each copy draws its own, in
    turn from every image's generator, so one copy draws exactly what a step always did."""
    return torch.stack([draws.next() for _ in range(copies)])


class _Chunk:
    """Optimises one chunk of items: everything that is the same for every chunk of a call."""

    def __init__(
        self,
        runner: ModelRunner,
        config: GenerationConfig,
        probe: LayerProbe,
        progress: _Progress,
        should_stop: Callable[[], bool] | None,
        unit_probe: UnitProbe | None = None,
    ) -> None:
        self.runner, self.config, self.probe = runner, config, probe
        self.unit_probe = unit_probe
        self.progress, self.should_stop = progress, should_stop
        self.transform = preset(config.transforms)
        self.lr = config.lr  # the rate in use: set by generate when the finder chooses it
        self._unit: float | None = None  # the regularisers' unit (_penalty_units), once

    def run(self, items: list[_Item]) -> list[Prototype]:
        lr = torch.full((len(items),), self.lr, device=self.runner.device)
        param, schedule = self.optimise(items, lr, self.config, report=True)
        weights = _class_weights(items, self.runner.num_classes, self.runner.device)
        return self._finish(items, param, weights, schedule)

    def optimise(
        self,
        items: list[_Item],
        lr: torch.Tensor,
        config: GenerationConfig,
        *,
        report: bool,
        trace: bool = False,
    ) -> tuple[ImageParam, StopSchedule]:
        """Optimise ``items`` at per-image rates ``lr`` until the schedule says every one
        is done; ``report``: progress events and cancellation (not for probes);
        ``trace``: the schedule keeps every step's losses (the finder's probes)."""
        device = self.runner.device
        generators = [generator(item.seed) for item in items]
        param = self._start(items, generators)
        if config.alpha:  # an opacity channel beside the image (_alpha.py)
            seeds = [item.seed for item in items]
            shape = self.runner.spec.shape
            param = AlphaParam(param, shape, seeds, device)
        if report:
            self.progress.begin()
        draws = DrawStream(generators, self.transform.n_draws, device)
        weights = _class_weights(items, self.runner.num_classes, device)
        unit = self._penalty_units(items)
        objective = self._objective(weights, items, unit)
        if isinstance(param, AlphaParam):
            alpha_weight = config.alpha_penalty if unit is None else config.alpha_penalty * unit
            objective = objective + alpha_mean(param) * alpha_weight
        groups = torch.tensor([item.group for item in items], device=device)
        optimiser = PerImageAdam(param.tensors)
        schedule = StopSchedule(len(items), config, device, trace=trace)
        prototypes = [item.target.kind == "prototype" for item in items]
        step = 0
        while step < schedule.last_step:
            step += 1
            if report and self.should_stop is not None and self.should_stop():
                raise GenerationCancelled(f"generation was cancelled at step {step - 1}")
            # the BatchNorm prior on every k-th step (from the first), k times as strong
            self.probe.bn_active = (step - 1) % config.bn_prior_every == 0
            rates = lr * schedule.factor(step)
            step_draws = _step_draws(draws, config.transform_copies)
            logits, losses = self._step(param, optimiser, objective, step_draws, groups, rates)
            schedule.observe(step, losses)
            if config.blur_every and step % config.blur_every == 0:
                param.blur_(config.blur_sigma)
            schedule.check(
                step,
                lambda logits=logits: confident(
                    _target_probability(self._probabilities(self._at_unit(logits)), weights),
                    prototypes,
                ),
            )
            if report and (step % config.progress_every == 0 or step == schedule.last_step):
                probs = _target_probability(self._probabilities(logits), weights)
                _check_finite(losses, step)
                self.progress.update(items, step, probs.tolist(), schedule)
        return param, schedule

    def step_peak_bytes(self, items: list[_Item]) -> int:
        """Peak CUDA memory one step of a chunk of ``items`` adds (parameters, optimiser
        state, activations), on throwaway parameters from a noise start."""
        config, device = self.config, self.runner.device
        shape = self.runner.spec.shape
        unit = self._penalty_units(items)  # its measuring forwards are not a step's
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        generators = [generator(item.seed) for item in items]
        param = config_param(config, len(items), shape, device)
        param.set_images(torch.stack([torch.rand(shape, generator=g) for g in generators]))
        draws = DrawStream(generators, self.transform.n_draws, device)
        weights = _class_weights(items, self.runner.num_classes, device)
        groups = torch.tensor([item.group for item in items], device=device)
        optimiser = PerImageAdam(param.tensors)
        rates = torch.full((len(items),), config.lr or _lr_finder.GRID[0], device=device)
        self.probe.bn_active = True  # the heavier of the two kinds of step
        objective = self._objective(weights, items, unit)
        self._step(
            param, optimiser, objective, _step_draws(draws, config.transform_copies), groups, rates
        )
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before

    def _start(self, items: list[_Item], generators: list[torch.Generator]) -> ImageParam:
        """Parameters at the configured start, each image's randomness from its own generator.

        ``noise``: uniform random pixels. ``constant`` and ``equidistant``: that
        image plus a small perturbation in parameter space, so prototypes of one
        target start apart and the diversity term can separate them.
        """
        config, runner = self.config, self.runner
        shape, n = runner.spec.shape, len(items)
        param = config_param(config, n, shape, runner.device)
        if config.start == "noise":
            param.set_images(torch.stack([torch.rand(shape, generator=g) for g in generators]))
            return param
        if config.start == "constant":
            param.set_images(torch.full((n, *shape), config.start_value))
        else:
            # the probe stays off: the baseline's forwards are not this chunk's first step
            self.probe.enabled = False
            try:
                baselines = baselines_for(runner, config, (i.call_seed for i in items))
            finally:
                self.probe.enabled = True
            param.set_images(torch.stack([baselines[item.call_seed] for item in items]))
        kind = config.parameterisation
        noise = torch.stack(
            [torch.randn(param_shape(kind, shape), generator=g) for g in generators]
        )
        with torch.no_grad():
            param.tensors[0].add_(noise.to(runner.device) * PERTURBATION_SD)
        return param

    def _probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        return probabilities(logits, self.runner.multi_label)

    def _objective(
        self, weights: torch.Tensor, items: list[_Item], unit: torch.Tensor | None
    ) -> obj.Objective:
        """The chunk's loss; ``unit``: each image's factor on its regularisers
        (``_penalty_units``), None for 1."""
        config = self.config
        objective = class_objective(
            weights, config.objective, config.margin_temperature, self.runner.multi_label
        )
        if self.unit_probe is not None:
            targets = [item.target for item in items]
            if has_units(targets):
                objective = objective + self.unit_probe.objective(targets)
        penalties: list[obj.Objective] = []
        if config.hf_penalty > 0:
            penalties.append((config.hf_penalty * HF_SCALE) * obj.high_frequency())
        if config.diversity > 0 and config.prototypes > 1:
            penalties.append(config.diversity * obj.diversity())
        if self.probe.want_bn:
            weight = config.bn_prior * config.bn_prior_every
            penalties.append(weight * obj.bn_prior())
        for penalty in penalties:
            objective = objective + (penalty if unit is None else penalty * unit)
        return objective

    def _at_unit(self, logits: torch.Tensor) -> torch.Tensor:
        """``logits`` as the convergence gate reads them: a model spreading less than a
        unit (``_logit_scale``) read at unit spread, so a tempered model's prototypes
        converge as the untempered model's do instead of running to the budget (its softmax
        alone never reaches the gate's 0.9); anything else as it is."""
        unit = self._unit
        if unit is None or not 0.0 < unit < 1.0:
            return logits
        return logits / unit

    def _penalty_units(self, items: list[_Item]) -> torch.Tensor | None:
        """Per image, the factor on its regularisers (``_logit_scale``): below 1 only for
        class prototypes of a model whose logits spread less than a unit; None when every
        factor is 1 (the objective is then built exactly as without it)."""
        if all(item.target.kind == "unit" for item in items):
            return None  # unit objectives are in their layers' own spread already
        if self._unit is None:
            self.probe.enabled = False  # the measuring forward is not a step's
            try:
                self._unit = penalty_unit(runner_spread(self.runner))
            finally:
                self.probe.enabled = True
        if self._unit >= 1.0:
            return None
        units = [1.0 if item.target.kind == "unit" else self._unit for item in items]
        return torch.tensor(units, device=self.runner.device)

    def _step(
        self,
        param: ImageParam,
        optimiser: PerImageAdam,
        objective: obj.Objective,
        draws: torch.Tensor,
        groups: torch.Tensor,
        rates: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimisation step at per-image ``rates``; gradients only w.r.t. the image
        parameters. ``draws`` is (K, N, per_step): the step's loss is the mean over K
        transformed copies of each image (``transform_copies``). Returns the first copy's
        logits and the per-image mean losses (detached).

        When compiling fails inside it, the step reruns eagerly: nothing it changes
        (gradients, optimiser state) is touched before the model's backward succeeds.
        """
        try:
            return self._eager_or_compiled_step(param, optimiser, objective, draws, groups, rates)
        except Exception as error:
            if not self.runner.compile_failed(error):
                raise
        self.probe.take()  # whatever the failed forward recorded
        return self._eager_or_compiled_step(param, optimiser, objective, draws, groups, rates)

    def _eager_or_compiled_step(
        self,
        param: ImageParam,
        optimiser: PerImageAdam,
        objective: obj.Objective,
        draws: torch.Tensor,
        groups: torch.Tensor,
        rates: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        copies = draws.shape[0]
        first: torch.Tensor | None = None
        losses = torch.zeros(())
        grads: tuple[torch.Tensor, ...] = ()
        for k in range(copies):  # one graph at a time: memory stays that of one copy
            images = param.image()
            inputs = self.transform(self.runner.normalise(images), draws[k])
            logits = self.runner.forward(inputs)
            features, bn_stats = self.probe.take()
            ctx = obj.StepContext(logits, images, groups, features, bn_stats)
            copy_losses = objective(ctx)
            copy_grads = torch.autograd.grad(copy_losses.sum() / copies, param.tensors)
            if k == 0:
                first, losses, grads = logits, copy_losses.detach(), copy_grads
            else:
                losses = losses + copy_losses.detach()
                grads = tuple(g + c for g, c in zip(grads, copy_grads, strict=True))
        assert first is not None
        optimiser.step(grads, rates)
        return first.detach(), losses / copies

    @torch.no_grad()
    def _finish(
        self, items: list[_Item], param: ImageParam, weights: torch.Tensor, schedule: StopSchedule
    ) -> list[Prototype]:
        """Evaluate the final, untransformed images and package them."""
        if isinstance(param, AlphaParam):
            param.final = True  # evaluated over mid-grey; stored as RGBA
        images = param.image().float()
        self.probe.enabled = False
        try:
            logits = self.runner.logits(images)
            unit_values = self._unit_values(items, logits)
        finally:
            self.probe.enabled = True
            self.probe.take()
        _check_finite(logits, schedule.last_step)
        probs = self._probabilities(logits)
        target_probs = _target_probability(probs, weights).tolist()
        target_logits = _target_probability(logits, weights).tolist()  # mean over the classes
        for k, value in unit_values.items():  # a unit target's "logit" is its objective value
            target_logits[k] = value
        top_p, top_c = probs.topk(min(5, probs.shape[1]), dim=1)
        images = (param.rgba() if isinstance(param, AlphaParam) else images).float().cpu()
        out = []
        for k, item in enumerate(items):
            out.append(
                Prototype(
                    image=images[k].contiguous(),
                    target=item.target,
                    index=item.index,
                    probability=target_probs[k],
                    logit=target_logits[k],
                    top5=list(zip(top_c[k].tolist(), top_p[k].tolist(), strict=True)),
                    steps=schedule.steps_of(k),
                    seed=item.seed,
                    config=self.config,
                    lr=self.lr,
                    stop_reason=schedule.reasons[k],
                    multi_label=self.runner.multi_label,
                )
            )
        return out

    def _unit_values(self, items: list[_Item], logits: torch.Tensor) -> dict[int, float]:
        """Position in ``items`` -> the weighted unit sum of a unit target's final image."""
        targets = [item.target for item in items]
        if self.unit_probe is None or not has_units(targets):
            return {}
        values = self.unit_probe.value(targets, logits.float()).tolist()
        return {k: values[k] for k, t in enumerate(targets) if t.kind == "unit"}


def _class_weights(items: list[_Item], num_classes: int, device: torch.device) -> torch.Tensor:
    """(N, K): +1 on each class an item maximises, -1 on the class an antitype minimises."""
    w = torch.zeros(len(items), num_classes)
    for k, item in enumerate(items):
        sign = -1.0 if item.target.kind == "antitype" else 1.0
        for c in item.target.classes:
            w[k, c] = sign
    return w.to(device)


def _target_probability(values: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` over each item's classes (one class unless a hybrid; 0 for a
    unit target, which has none)."""
    mask = weights.abs()
    return (values * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(1)


def _check_finite(values: torch.Tensor, step: int) -> None:
    if not bool(torch.isfinite(values).all()):
        raise GenerationDiverged(
            f"the optimisation produced NaN/Inf by step {step}: give a lower learning rate "
            "(config.lr; --lr on the command line), or check that the model gives finite "
            "logits for inputs in [0, 1]"
        )
