"""Self-tuning generation: the learning-rate finder, convergence stopping and the
margin objective, on tiny real models made here across the axes the defaults must
cover (input size, classes, BatchNorm or not, normalisation in the spec or in the
model, CNN or ViT)."""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable, Sequence

import pytest
import torch
from engine_nets import SPEC, tiny_net
from protolens_server.engine import (
    Classifier,
    GenerationConfig,
    InputSpec,
    ProgressEvent,
    find_lr,
    generate,
    lr_key,
)
from torch import nn

# The defaults, minus the equidistant start's cost (and transforms, which a random
# 32-px net is not robust to): what is under test is the rate and the stopping.
DEFAULTS = GenerationConfig(equidistant_steps=4, transforms="none", max_steps=192)


class PlainCNN(nn.Module):
    """conv-ReLU stack without BatchNorm; normalises its own input when ``own_norm``."""

    def __init__(self, classes: int, size: int, own_norm: bool) -> None:
        super().__init__()
        stride = max(1, size // 32)  # so 384 px costs about what 32 px does
        self.own_norm = own_norm
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 5, stride, 2), nn.ReLU(), nn.Conv2d(16, 32, 3, 2, 1), nn.ReLU()
        )
        self.head = nn.Linear(32, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.own_norm:  # expects [0, 1] and standardises itself
            x = (x - 0.45) / 0.25
        return self.head(self.features(x).mean(dim=(2, 3)))


class TinyViT(nn.Module):
    """Patch embedding + two transformer encoder layers + class token."""

    def __init__(self, classes: int, size: int, patch: int = 8, dim: int = 32) -> None:
        super().__init__()
        self.embed = nn.Conv2d(3, dim, patch, patch)
        self.cls = nn.Parameter(torch.randn(1, 1, dim) * 0.5)
        self.pos = nn.Parameter(torch.randn(1, (size // patch) ** 2 + 1, dim) * 0.1)
        layer = nn.TransformerEncoderLayer(dim, 4, 64, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = nn.Linear(dim, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.embed(x).flatten(2).transpose(1, 2)
        tokens = torch.cat([self.cls.expand(len(x), -1, -1), tokens], dim=1) + self.pos
        return self.head(self.encoder(tokens)[:, 0])


def _model(kind: str, size: int, classes: int) -> Classifier:
    torch.manual_seed(0)
    if kind == "cnn_bn":
        return Classifier(tiny_net(), SPEC, 10)
    if kind == "vit":
        net: nn.Module = TinyViT(classes, size)
        spec = InputSpec(3, size, size)
    else:  # plain CNN, normalisation inside the model: the spec passes [0, 1] through
        net = PlainCNN(classes, size, own_norm=True)
        spec = InputSpec(3, size, size, mean=(0.0,), std=(1.0,))
    nn.init.normal_(net.head.weight, std=1.0)
    return Classifier(net.eval().requires_grad_(False), spec, classes)


AXES = [
    ("cnn_bn", 32, 10),  # BatchNorm, normalisation in the spec
    ("cnn_plain", 64, 1000),  # no BatchNorm, normalisation in the model, 1000 classes
    ("cnn_plain", 384, 10),  # large input
    ("vit", 32, 10),  # a small ViT
]


@pytest.mark.parametrize(("kind", "size", "classes"), AXES)
def test_defaults_reach_a_confident_target_and_stop_for_a_reason(
    kind: str, size: int, classes: int
) -> None:
    model = _model(kind, size, classes)
    target = 1
    events: list[ProgressEvent] = []
    (proto,) = generate(model, [target], DEFAULTS, seed=3, on_progress=events.append)
    # top-1, and confident: 0.9, or 50 times chance where a 32-feature random head cannot
    # lift one class of 1000 that far
    assert proto.top5[0][0] == target, proto.top5
    assert proto.probability > min(0.9, 50 / classes), proto.top5
    assert proto.stop_reason in ("converged", "budget")
    assert proto.steps <= DEFAULTS.max_steps
    assert proto.lr == find_lr(model, DEFAULTS)  # the finder's choice, recorded
    # progress events carry the rate and, once it has stopped, the reason
    assert events[-1].lr == proto.lr and events[-1].stop_reasons == (proto.stop_reason,)
    assert events[0].stop_reasons == ("",) and events[-1].total_steps == DEFAULTS.max_steps


def test_convergence_stops_before_the_budget_and_fixed_steps_run_exactly() -> None:
    model = _model("cnn_bn", 32, 10)
    config = DEFAULTS.replace(lr=0.1, max_steps=2000)
    converged = generate(model, [1, 8], config)
    assert all(p.stop_reason == "converged" and p.steps < 2000 for p in converged)
    assert all(p.probability > 0.9 for p in converged)
    fixed = generate(model, [1], config.replace(steps=20))[0]
    assert (fixed.steps, fixed.stop_reason) == (20, "steps")
    budget = generate(model, [1], config.replace(max_steps=24))[0]
    assert (budget.steps, budget.stop_reason) == (24, "budget")


def test_defaults_are_deterministic_given_a_seed() -> None:
    # (alone or in a batch, a prototype is the same up to float rounding, which long runs
    # at a high rate amplify: test_engine_batching checks that on short runs)
    model = _model("cnn_bn", 32, 10)
    a = generate(model, [1, 8], DEFAULTS, seed=[4, 5])
    b = generate(model, [1, 8], DEFAULTS, seed=[4, 5])
    c = generate(model, [1, 8], DEFAULTS, seed=[6, 7])
    assert [(p.steps, p.stop_reason, p.lr) for p in a] == [
        (p.steps, p.stop_reason, p.lr) for p in b
    ]
    assert torch.equal(torch.stack([p.image for p in a]), torch.stack([p.image for p in b]))
    assert (torch.stack([p.image for p in a]) - torch.stack([p.image for p in c])).abs().max() > 0.1


def test_the_finder_is_memoised_shared_and_skipped_when_lr_is_given() -> None:
    model = _model("cnn_plain", 32, 10)
    shared: dict[str, float] = {}
    start = time.perf_counter()
    lr = find_lr(model, DEFAULTS, lr_cache=shared)
    first = time.perf_counter() - start
    assert shared == {lr_key(model, DEFAULTS, "cpu"): lr}
    start = time.perf_counter()
    assert find_lr(model, DEFAULTS) == lr  # memoised in process
    assert time.perf_counter() - start < first / 5
    # another process (a fresh model object) takes the shared choice without probing
    twin = _model("cnn_plain", 32, 10)
    planted = {lr_key(twin, DEFAULTS, "cpu"): 0.0123}
    assert generate(twin, [1], DEFAULTS.replace(max_steps=8), lr_cache=planted)[0].lr == 0.0123
    # a given rate skips the finder (and the cache)
    given = generate(twin, [1], DEFAULTS.replace(lr=0.07, max_steps=8), lr_cache={})[0]
    assert given.lr == 0.07


def test_the_rate_key_ignores_steps_and_seeds_but_not_what_shapes_the_optimisation() -> None:
    model = _model("cnn_bn", 32, 10)
    key = lr_key(model, DEFAULTS, "cpu")
    assert lr_key(model, DEFAULTS.replace(max_steps=64, steps=10, lr=0.3), "cpu") == key
    assert lr_key(model, DEFAULTS.replace(transforms="large"), "cpu") != key
    assert lr_key(model, DEFAULTS.replace(hf_penalty=2.0), "cpu") != key
    assert lr_key(model, DEFAULTS, "cuda") != key


def test_the_margin_keeps_improving_past_probability_saturation() -> None:
    model = _model("cnn_bn", 32, 10)
    config = DEFAULTS.replace(lr=0.1, hf_penalty=0.0, bn_prior=0.0)
    short, long = (generate(model, [1], config.replace(steps=n))[0] for n in (48, 160))
    assert short.probability > 0.99  # saturated ...
    assert long.logit > short.logit + 1.0  # ... and still gaining


def test_local_commands_keep_the_found_rate_on_disk(tmp_path) -> None:
    """A cold `protolens generate` reads the rate an earlier process found (lr_memory)."""
    from protolens_server.lr_memory import DiskRates

    model = _model("cnn_plain", 32, 10)
    lr = find_lr(model, DEFAULTS, lr_cache=DiskRates("abc", tmp_path))
    stored = json.loads((tmp_path / "abc.json").read_text())
    assert stored == {lr_key(model, DEFAULTS, "cpu"): lr}
    # a new process: a fresh model object, the file read back; a planted rate proves
    # the stored one is used rather than found again
    twin = _model("cnn_plain", 32, 10)
    (tmp_path / "abc.json").write_text(json.dumps({lr_key(twin, DEFAULTS, "cpu"): 0.0321}))
    rates = DiskRates("abc", tmp_path)
    assert generate(twin, [1], DEFAULTS.replace(max_steps=8), lr_cache=rates)[0].lr == 0.0321
    (tmp_path / "bad.json").write_text("not json")
    assert len(DiskRates("bad", tmp_path)) == 0  # unreadable: found again, then rewritten


class _OomOver(nn.Module):
    """Raises torch's OutOfMemoryError for a forward over more than ``cap`` images."""

    def __init__(self, net: nn.Module, cap: int) -> None:
        super().__init__()
        self.net, self.cap, self.ooms = net, cap, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] > self.cap:
            self.ooms += 1
            raise torch.OutOfMemoryError(f"injected: {x.shape[0]} > {self.cap} images")
        return self.net(x)


def test_the_finders_probe_halves_its_chunk_on_out_of_memory() -> None:
    plain = _model("cnn_plain", 32, 10)
    capped = _OomOver(plain.module, 2)
    model = Classifier(capped, plain.input_spec, 10)
    config = DEFAULTS.replace(equidistant_steps=0)
    lr = find_lr(model, config, lr_cache={})
    assert capped.ooms >= 1 and lr > 0  # it ran out of memory, split and still chose
    assert lr == find_lr(_model("cnn_plain", 32, 10), config, lr_cache={})


def test_a_stalled_prototype_the_model_is_unsure_of_runs_on_to_its_budget() -> None:
    """The plateau rule alone stopped a small ViT's prototype at p = 0.36; a class
    prototype converges only once its target is confident (``_stopping.CONFIDENT``)."""
    from protolens_server.engine._stopping import CONFIDENT, StopSchedule, confident

    config = GenerationConfig(max_steps=256)
    schedule = StopSchedule(3, config, torch.device("cpu"))
    sure = torch.tensor([0.99, 0.36, 0.36])
    may = confident(sure, [True, True, False])  # the third is not a class prototype
    assert may == [True, False, True] and CONFIDENT > 0.36
    for step in range(1, 129):  # the loss falls, then stalls for every image
        loss = max(0.0, 10.0 - step / 4)
        schedule.observe(step, torch.full((3,), loss))
        schedule.check(step, lambda: may)
    assert schedule.reasons == ["converged", "budget", "converged"]
    assert schedule.steps_of(1) == 256 and schedule.steps_of(0) < 128


def test_probe_lr_shows_what_the_finder_chose_from() -> None:
    from protolens_server.engine import probe_lr
    from protolens_server.engine._lr_finder import (
        GRID,
        MAX_LR,
        PROBE_CLASSES,
        PROBE_SEEDS,
        PROBE_STEPS,
        TOLERANCE,
        choose,
    )

    model = _model("cnn_bn", 32, 10)
    probe = probe_lr(model, DEFAULTS)
    assert probe.rates == GRID and len(GRID) == len(probe.losses) == len(probe.scores)
    assert len(probe.ends) == len(probe.traces) == len(GRID)
    assert len(probe.classes) == PROBE_CLASSES > 1  # several classes, not one
    assert probe.seeds == PROBE_SEEDS and len(PROBE_SEEDS) > 1  # each from several starts
    assert all(len(e) == PROBE_CLASSES * len(PROBE_SEEDS) for e in probe.ends)
    assert all(len(t) == PROBE_STEPS for rate in probe.traces for t in rate)
    assert probe.chosen == choose(probe.scores) == find_lr(model, DEFAULTS)
    assert max(probe.scores) <= 1.0 and min(probe.scores) >= 0.0
    assert probe.chosen_at(TOLERANCE) == probe.chosen
    assert probe.rates[0] <= probe.chosen <= MAX_LR == probe.rates[-2]  # never above 0.2
    # another seed starts each probe elsewhere: other losses (the finder pools seeds)
    one, other = probe_lr(model, DEFAULTS, classes=1), probe_lr(model, DEFAULTS, seeds=(7,))
    assert len(one.classes) == 1 and one.rates[0] <= one.chosen <= MAX_LR
    assert other.seeds == (7,) and other.ends[2][0] != probe.ends[2][0]
    # another grid, for inspection (bench/finder_probe.py --rates): its rates, its choice
    two = probe_lr(model, DEFAULTS, rates=GRID[1:3], classes=1)
    assert two.rates == GRID[1:3] and len(two.ends) == len(two.traces) == 2
    assert two.chosen in (GRID[1], 0.07071, GRID[2])


def test_the_finder_scores_each_probe_on_its_own_scale_and_takes_the_good_rates_centre() -> None:
    """The rule on given probe losses (``[rate][probe]``, grid 0.025 .. 0.4)."""
    from protolens_server.engine._lr_finder import GRID, centre, choose, scores

    def pick(losses: list[list[float]]) -> float:
        return choose(scores(losses))

    assert GRID == (0.025, 0.05, 0.1, 0.2, 0.4)
    # A flat curve (a small ViT's probe: 0.05 .. 0.4 all about as good): the centre is
    # the middle of the flat part, and the finder takes the nearest of the grid rates
    # and their midpoints.
    flat = scores([[1.0], [-0.9], [-1.0], [-0.95], [-0.9]])
    assert 0.1 < centre(flat) < 0.2 and choose(flat) == 0.1414
    # Each probe counts on its own scale: probe 0's losses spread 20 times wider than
    # the others' and it prefers 0.025; three probes do best at 0.4. A mean of raw
    # losses follows probe 0; the per-probe fractions do not.
    big = [-60.0, -40.0, -20.0, 0.0, 20.0]
    small = [2.0, 1.5, 1.0, 0.5, 0.0]
    raw = [[b, s, s, s] for b, s in zip(big, small, strict=True)]
    assert min(range(len(GRID)), key=lambda r: sum(raw[r])) == 0 and pick(raw) == 0.2
    # A peaked curve (best 0.2, then 0.1): the centre lies near the best.
    peaked = [[2.0], [1.0], [0.0], [-1.0], [2.5]]
    assert 0.15 < centre(scores(peaked)) < 0.2 and pick(peaked) == 0.2
    # A rate scoring just at the floor weighs nothing: [1, 0.9, 0.7 x 1] is centred
    # between the first two, nearer the better; tolerance 0: the best rate alone.
    assert choose([0.0, 1.0, 0.9, 0.7, 0.0]) == 0.07071
    assert [choose([0.0] * k + [1.0] + [0.0] * (4 - k)) for k in range(5)] == [*GRID[:4], 0.2]
    assert choose([0.2, 0.5, 1.0, 0.9, 0.2], tolerance=0.0) == 0.1
    # A loss still falling at the grid's top: nothing faster was probed, so at most 0.2;
    # a diverged (NaN) rate scores 0; a probe whose losses are all equal is ignored;
    # no information at all: the lowest rate.
    assert pick([[2.0], [1.0], [0.0], [-1.0], [-2.0]]) == 0.2
    assert pick([[2.0], [1.0], [0.0], [-1.0], [float("nan")]]) == 0.2
    assert pick([[v[0], 5.0] for v in peaked]) == pick(peaked)
    assert pick([[3.0]] * len(GRID)) == GRID[0]


# EfficientNet-Lite0's probe scores on engine 0.3.4 (one seed, four classes, FINDER_VERSION
# 3's grid 0.025 .. 0.8) at one and two torch threads:
# ``python bench/finder_probe.py efficientnet_lite0 --threads N``.
V3_GRID = tuple(0.025 * 2**k for k in range(6))
EFFNET_V3_SCORES_1_THREAD = [0.45, 0.89, 0.89, 0.40, 0.52, 0.00]
EFFNET_V3_SCORES_2_THREADS = [0.50, 0.82, 0.82, 0.69, 0.71, 0.09]
# The finder's own probes (two seeds, grid 0.025 .. 0.4) on engine 0.3.6, the same command
# (bench/results/finder_robustness/v4/finder4_t1_run1.json, finder4_t2_run1.json): 0.0707
# at both.
EFFNET_SCORES_1_THREAD = [0.28, 0.86, 0.92, 0.55, 0.26]
EFFNET_SCORES_2_THREADS = [0.27, 0.73, 0.79, 0.43, 0.39]


def _choose_v2(rate_scores: list[float], grid: Sequence[float], tolerance: float = 0.3) -> float:
    """``FINDER_VERSION`` 2's rule (one grid step below the end of the good range),
    to show what the tests below catch."""
    best = max(rate_scores)
    last = len(grid) - 2
    k = min(rate_scores.index(best), last)
    while k < last and rate_scores[k + 1] >= (1 - tolerance) * best:
        k += 1
    return grid[max(0, k - 1)]


def test_the_choice_moves_by_at_most_a_half_octave_between_the_measured_thread_counts() -> None:
    """The old rule picked 0.05 from the 1-thread scores and 0.2 from the 2-thread ones;
    the centre's rule a half-octave apart on the grid to 0.8, and alike on the grid to 0.4."""
    from protolens_server.engine._lr_finder import choose

    one, two = (
        choose(EFFNET_V3_SCORES_1_THREAD, V3_GRID),
        choose(EFFNET_V3_SCORES_2_THREADS, V3_GRID),
    )
    assert (one, two) == (0.07071, 0.1)
    old = [_choose_v2(v, V3_GRID) for v in (EFFNET_V3_SCORES_1_THREAD, EFFNET_V3_SCORES_2_THREADS)]
    assert old == [0.05, 0.2]
    assert choose(EFFNET_SCORES_1_THREAD) == choose(EFFNET_SCORES_2_THREADS) == 0.07071


def test_a_score_crossing_the_floor_moves_the_centre_a_little_not_a_grid_step() -> None:
    """The 1-thread scores, with 0.2's score raised step by step to its 2-thread value:
    it crosses the good-rate floor (0.7 x 0.9) on the way. Every 0.01 moves the centre by
    under 3 % and the choice not at all; the old rule doubled it at the floor."""
    from protolens_server.engine._lr_finder import centre, choose

    def varied(rule: Callable[[list[float], Sequence[float]], float]) -> list[float]:
        return [  # 0.2 at 0.40 .. 0.69
            rule([0.45, 0.89, 0.9, k / 100, *EFFNET_V3_SCORES_1_THREAD[4:]], V3_GRID)
            for k in range(40, 70)
        ]

    centres = varied(centre)
    assert all(b / a < 1.03 for a, b in itertools.pairwise(centres))
    assert centres[-1] > centres[0]  # it does respond
    assert set(varied(choose)) == {0.07071}
    old = varied(_choose_v2)
    assert max(b / a for a, b in itertools.pairwise(old)) == 2.0
