"""Self-tuning generation: the learning-rate finder, convergence stopping and the
margin objective, on tiny real models made here across the axes the defaults must
cover (input size, classes, BatchNorm or not, normalisation in the spec or in the
model, CNN or ViT)."""

from __future__ import annotations

import json
import time

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
    from protolens_server.engine._lr_finder import PROBE_CLASSES, TOLERANCE, choose

    model = _model("cnn_bn", 32, 10)
    probe = probe_lr(model, DEFAULTS)
    assert len(probe.rates) == len(probe.losses) == len(probe.scores)
    assert len(probe.classes) == PROBE_CLASSES > 1  # several classes, not one
    assert probe.chosen == choose(probe.scores) == find_lr(model, DEFAULTS)
    assert max(probe.scores) <= 1.0 and min(probe.scores) >= 0.0
    assert probe.chosen_at(TOLERANCE) == probe.chosen  # another tolerance: another rule
    assert probe.chosen_at(0.0) <= probe.chosen <= probe.chosen_at(1.0) == probe.rates[-3]
    one = probe_lr(model, DEFAULTS, classes=1)
    assert len(one.classes) == 1 and one.chosen in one.rates


def test_the_finder_scores_each_class_on_its_own_scale_and_steps_below_the_good_rates() -> None:
    """The rule on given probe losses (``[rate][class]``, grid 0.025 .. 0.8)."""
    from protolens_server.engine._lr_finder import GRID, choose, scores

    def pick(losses: list[list[float]]) -> float:
        return choose(scores(losses))

    # A flat curve (a small ViT's probe: 0.05 .. 0.4 all about as good): one below the
    # fastest good rate below the top, not one below the best (0.05 under the old rule).
    assert pick([[1.0], [-0.9], [-1.0], [-0.95], [-0.9], [2.0]]) == 0.2
    # Each class counts on its own scale: class 0's losses spread 20 times wider than
    # the others' and it prefers 0.025; three classes do best at 0.4. A mean of raw
    # losses follows class 0 (the old rule took 0.025); the per-class fractions do not.
    big = [-60.0, -40.0, -20.0, 0.0, 20.0, 40.0]
    small = [2.0, 1.5, 1.0, 0.5, 0.0, 1.5]
    assert pick([[b, s, s, s] for b, s in zip(big, small, strict=True)]) == 0.2
    # A peaked curve: one below the best, as before.
    assert pick([[2.0], [1.0], [0.0], [-1.0], [2.5], [3.0]]) == 0.1
    # A loss still falling at the grid's top: the top is not a candidate (nothing faster
    # was probed), so one below its neighbour; a diverged (NaN) rate scores 0; a class
    # whose losses are all equal is ignored; no information at all: the lowest rate.
    assert pick([[2.0], [1.0], [0.0], [-1.0], [-2.0], [-3.0]]) == 0.2
    assert pick([[2.0], [1.0], [0.0], [-1.0], [-2.0], [float("nan")]]) == 0.2
    flat_class = [[2.0, 5.0], [1.0, 5.0], [0.0, 5.0], [-1.0, 5.0], [2.5, 5.0], [3.0, 5.0]]
    assert pick(flat_class) == 0.1
    assert pick([[3.0]] * len(GRID)) == GRID[0]
    # Only good rates next to the best count: a good score beyond a bad one is noise.
    assert pick([[1.0], [0.4], [0.0], [1.2], [0.5], [2.0]]) == 0.05
