"""Issue 8's execution options against the plain path, on CPU: ``torch.compile`` (and its
eager fallback), and chunks sized automatically (``max_batch=0``) against fixed chunks.

channels_last against contiguous and batched against one target at a time are in
test_engine_batching.py. The memory-budget arithmetic is tested with the numbers of a
real card; the CUDA probe that feeds it runs in bench/gpu_check.sh.
"""

from __future__ import annotations

import math
import os
import warnings

import pytest
import torch
import torch._inductor.config as inductor_config
from engine_nets import FAST, SPEC, TinyNet, tiny_net
from protolens_server.engine import (
    Classifier,
    InputSpec,
    Target,
    auto_batch_size,
    cpu_chunk_cap,
    find_lr,
    generate,
)
from protolens_server.engine._forward import ModelRunner
from protolens_server.engine._memory import (
    CPU_AUTO_BATCH,
    MemoryFit,
    chunk_size,
    fit_peaks,
    headroom_bytes,
)
from protolens_server.errors import InvalidArgument

# transforms, diversity features, the BatchNorm prior on every 2nd step (two graphs), blur
RICH = FAST.replace(transforms="medium", diversity=1.0, bn_prior=0.1, blur_every=3, steps=6)
TARGETS = [3, (1, 2), Target((4,), "antitype")]
GIB = 2**30


def _images(protos: list) -> torch.Tensor:
    return torch.stack([p.image for p in protos])


class _Recording(torch.nn.Module):
    """The real tiny net, recording the batch size of every forward (still probe-able)."""

    def __init__(self, shrink: int = 1) -> None:
        super().__init__()
        self.net = tiny_net()
        self.shrink = shrink  # pool large inputs down first: the net's cost stays small
        self.sizes: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.sizes.append(x.shape[0])
        return self.net(torch.nn.functional.avg_pool2d(x, self.shrink) if self.shrink > 1 else x)


def test_compiled_step_computes_the_same_prototypes_as_eager() -> None:
    # the prior on every step: one graph to compile, not two (~10 s cold on this CPU)
    config = RICH.replace(prototypes=2, bn_prior_every=1)
    eager = generate(Classifier(tiny_net(), SPEC, 10), TARGETS, config, seed=3)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # a fallback to eager would fail here
        compiled = generate(Classifier(tiny_net(), SPEC, 10), TARGETS, config, seed=3, compile=True)
    torch.testing.assert_close(_images(compiled), _images(eager), atol=1e-3, rtol=0)
    for c, e in zip(compiled, eager, strict=True):
        assert c.probability == pytest.approx(e.probability, abs=1e-3)


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("PROTOLENS_SLOW") != "1", reason="set PROTOLENS_SLOW=1")
def test_compiled_chunks_and_alternating_prior_match_eager() -> None:
    """Chunks of 4 then 2 (a second shape: a batch-generic recompile) and the prior on
    every 2nd step (two graphs): about 40 s of compiling on this CPU."""
    config = RICH.replace(prototypes=2, diversity=0.0, max_batch=4)
    eager = generate(Classifier(tiny_net(), SPEC, 10), TARGETS, config, seed=5)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        compiled = generate(Classifier(tiny_net(), SPEC, 10), TARGETS, config, seed=5, compile=True)
    torch.testing.assert_close(_images(compiled), _images(eager), atol=1e-3, rtol=0)


class _NoCompilerNet(TinyNet):
    """TinyNet with a forward of its own: dynamo has no compiled code for it yet."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=(2, 3)))


def test_compile_failure_falls_back_to_eager_with_a_warning() -> None:
    net = _NoCompilerNet()
    net.load_state_dict(tiny_net().state_dict())
    net.eval().requires_grad_(False)
    config = RICH.replace(steps=4)
    want = generate(Classifier(tiny_net(), SPEC, 10), TARGETS, config)
    # a machine without a C++ compiler, as inductor sees it
    with inductor_config.patch({"cpp.cxx": ("/nonexistent/c++",)}):
        with pytest.warns(RuntimeWarning, match="torch.compile failed.*running the model eagerly"):
            got = generate(Classifier(net, SPEC, 10), TARGETS, config, compile=True)
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)  # not tried (nor warned) again
            again = generate(Classifier(net, SPEC, 10), TARGETS, config, compile=True)
    torch.testing.assert_close(_images(got), _images(want), atol=1e-4, rtol=0)
    torch.testing.assert_close(_images(again), _images(want), atol=1e-4, rtol=0)
    assert not ModelRunner(
        Classifier(net, SPEC, 10), config, torch.device("cpu"), compile=True
    ).compiled


def test_compile_leaves_torchscript_eager() -> None:
    scripted = torch.jit.script(tiny_net())
    runner = ModelRunner(Classifier(scripted, SPEC, 10), FAST, torch.device("cpu"), compile=True)
    assert not runner.compiled
    assert ModelRunner(
        Classifier(tiny_net(), SPEC, 10), FAST, torch.device("cpu"), compile=True
    ).compiled


def test_auto_sized_chunks_compute_the_same_prototypes_as_fixed_chunks() -> None:
    config = FAST.replace(steps=5, prototypes=2, transforms="medium", bn_prior=0.1)
    targets = list(range(10)) * 2  # 40 images: more than the CPU's auto size of 32
    recording = _Recording()
    # unfolded (fold_batchnorm=False): a folded copy would not run _Recording.forward
    auto = generate(
        Classifier(recording, SPEC, 10), targets, config.replace(max_batch=0), fold_batchnorm=False
    )
    fixed_config = config.replace(max_batch=40)
    fixed = generate(Classifier(tiny_net(), SPEC, 10), targets, fixed_config, fold_batchnorm=False)
    step_sizes = set(recording.sizes) - {1}  # 1: the equidistant baseline
    assert step_sizes == {CPU_AUTO_BATCH, 40 - CPU_AUTO_BATCH}
    torch.testing.assert_close(_images(auto), _images(fixed), atol=1e-3, rtol=0)


def test_a_cpu_chunk_holds_four_224_px_images_worth_per_thread() -> None:
    rgb224 = 3 * 224 * 224
    assert cpu_chunk_cap(rgb224, threads=1) == 4
    assert cpu_chunk_cap(rgb224, threads=2) == 8  # each thread streams its own share
    assert cpu_chunk_cap(3 * 384 * 384, threads=1) == 1
    assert cpu_chunk_cap(3 * 1024 * 1024, threads=1) == 1  # never none
    assert cpu_chunk_cap(3 * 32 * 32, threads=1) >= CPU_AUTO_BATCH  # small images: unchanged
    assert cpu_chunk_cap(rgb224, threads=0) == 4  # a thread count below one reads as one
    with pytest.raises(ValueError, match="per_thread"):
        cpu_chunk_cap(rgb224, threads=1, per_thread=0)


def test_large_inputs_run_in_capped_chunks_on_the_cpu_and_make_the_same_prototypes() -> None:
    """At 224 px and one thread a chunk holds 4 images whatever ``max_batch`` allows; the
    cap moves only where chunks split (bench/cpu_chunks.py measures why)."""
    spec = InputSpec(3, 224, 224)
    config = FAST.replace(steps=3, transforms="medium", max_batch=32)
    capped, free = _Recording(shrink=7), _Recording(shrink=7)
    a = generate(Classifier(capped, spec, 10), list(range(6)), config, fold_batchnorm=False)
    b = generate(
        Classifier(free, spec, 10), list(range(6)), config, fold_batchnorm=False,
        cpu_chunk_values=0,
    )  # fmt: skip
    assert set(capped.sizes) - {1} == {4, 2}  # (1: the equidistant baseline)
    assert set(free.sizes) - {1} == {6}
    # "auto" (max_batch 0) is capped the same way, and lifted the same way
    assert auto_batch_size(Classifier(tiny_net(), spec, 10), config, images=6).size == 4
    auto_free = _Recording(shrink=7)
    generate(Classifier(auto_free, spec, 10), list(range(6)), config.replace(max_batch=0),
             fold_batchnorm=False, cpu_chunk_values=0)  # fmt: skip
    assert set(auto_free.sizes) - {1} == {6}
    torch.testing.assert_close(_images(a), _images(b), atol=1e-3, rtol=0)
    # an explicit max_batch below the cap is kept, and the finder's probes are capped too
    small = _Recording(shrink=7)
    generate(Classifier(small, spec, 10), [0, 1, 2, 3, 4], config.replace(max_batch=3),
             fold_batchnorm=False)  # fmt: skip
    assert set(small.sizes) - {1} == {3, 2}
    # 32-px models keep their chunks of 32 (so the shortcut suite's prototypes did not move)
    at32 = _Recording()
    generate(Classifier(at32, SPEC, 10), list(range(10)) * 4, FAST.replace(steps=2),
             fold_batchnorm=False)  # fmt: skip
    assert set(at32.sizes) - {1} == {32, 8}
    probed = _Recording(shrink=7)
    find_lr(Classifier(probed, spec, 10), config.replace(lr=0), fold_batchnorm=False)
    assert max(probed.sizes) == 4


def test_auto_size_off_cuda_is_the_fixed_size() -> None:
    model = Classifier(tiny_net(), SPEC, 10)
    assert auto_batch_size(model, FAST, images=100).size == CPU_AUTO_BATCH
    assert auto_batch_size(model, FAST, images=5).size == 5
    assert auto_batch_size(model, FAST, images=100).fit is None


@pytest.mark.parametrize("budget", [0.0, -0.5, 1.5])
def test_a_memory_budget_outside_0_1_is_refused(budget: float) -> None:
    with pytest.raises(InvalidArgument, match="memory_budget"):
        generate(Classifier(tiny_net(), SPEC, 10), [1], FAST, memory_budget=budget)


def test_a_negative_max_batch_is_refused() -> None:
    with pytest.raises(InvalidArgument, match=r"config.max_batch: must be >= 0 \(0: as many"):
        FAST.replace(max_batch=-1)


# --- the memory arithmetic -------------------------------------------------------------


def test_fit_through_two_probes_is_fixed_plus_per_image() -> None:
    # ResNet-50-like: 2 images 2.1 GiB, 8 images 6.9 GiB -> 0.8 GiB per image + 0.5 GiB
    fit = fit_peaks([(2, int(2.1 * GIB)), (8, int(6.9 * GIB))])
    assert fit.per_image_bytes == pytest.approx(0.8 * GIB, rel=1e-6)
    assert fit.fixed_bytes == pytest.approx(0.5 * GIB, rel=1e-5)
    assert fit.peak(8) == pytest.approx(6.9 * GIB, rel=1e-6)


def test_one_probe_or_a_noisy_slope_counts_everything_as_per_image() -> None:
    assert fit_peaks([(4, 4000)]) == MemoryFit(0.0, 1000.0)
    # the larger chunk measured less (allocator noise): never extrapolate a negative slope
    assert fit_peaks([(2, 5000), (8, 4800)]) == MemoryFit(0.0, 600.0)
    with pytest.raises(ValueError):
        fit_peaks([])


def test_headroom_counts_other_use_and_reuses_torchs_own_cache() -> None:
    total = 80 * GIB  # an 80 GiB card
    # 10 GiB free on the device, but torch holds 30 GiB of which 4 GiB live: 26 GiB cached
    room = headroom_bytes(total=total, free=10 * GIB, reserved=30 * GIB, allocated=4 * GIB,
                          budget=0.8)  # fmt: skip
    in_use = total - 10 * GIB - 26 * GIB  # 44 GiB: other processes, context, live tensors
    assert room == pytest.approx(0.8 * total - in_use)
    assert room == pytest.approx(20 * GIB)
    # already over budget: no room at all
    assert headroom_bytes(total=total, free=GIB, reserved=0, allocated=0, budget=0.5) < 0


def test_chunk_size_is_the_largest_that_fits() -> None:
    fit = MemoryFit(fixed_bytes=0.5 * GIB, per_image_bytes=0.8 * GIB)
    room = 0.8 * 80 * GIB - 1.5 * GIB  # an idle 80 GiB card, weights and context in use
    n = chunk_size(fit, room, cap=10_000)
    assert n == math.floor((room - 0.5 * GIB) / (0.8 * GIB)) == 77
    assert fit.peak(n) <= room < fit.peak(n + 1)
    assert chunk_size(fit, room, cap=50) == 50  # never more than the call has
    assert chunk_size(fit, 0.1 * GIB, cap=50) == 1  # nothing fits: one at a time (OOM splits)
    assert chunk_size(MemoryFit(0.0, 0.0), room, cap=7) == 7
