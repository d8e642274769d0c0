"""Chunk size from a device memory budget (``config.max_batch = 0``, "auto").

On CUDA the engine measures the peak memory of one real optimisation step at two
small chunk sizes (``PROBE_SIZES``), fits ``peak = fixed + per_image * n``, and
takes the largest chunk whose predicted peak fits the headroom: ``budget`` times
the card's memory, minus what is already in use on it (other processes, this
process's tensors, the model's weights). Out-of-memory still halves the chunk,
so a fit that is too optimistic costs one retry, not the job. The fit is
memoised per model and memory-relevant settings; the headroom is read afresh on
every call. Other devices have no allocator statistics to probe: there "auto"
is a fixed ``CPU_AUTO_BATCH``.

On the CPU a chunk is also held to ``cpu_chunk_cap``: at most
``CPU_VALUES_PER_THREAD`` input values (four 224-px RGB images) per torch thread.
A CPU step streams every image-sized tensor (parameters, spectrum, transforms,
optimiser state, the network's activations) through the caches; past a few
images' worth the step becomes memory-bound and each image costs more, not less
(``bench/cpu_chunks.py``, one thread: a 384-px CNN's learning-rate finder took 1.9x
as long in chunks of 32 and 8 as one image at a time; EfficientNet-Lite0 at 224 px
cost 20 % more per image-step in chunks of 16 than of 4), while small images still
want the large chunk (a 32-px CNN: 1.5x cheaper per image at 32 than at 4). The cap
moves only where chunks are split, so a prototype changes by float rounding alone
(which ENGINE_VERSION records).

The arithmetic is here, free of torch, so it is tested with real numbers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from protolens_server.errors import InvalidArgument

CPU_AUTO_BATCH = 32  # the default max_batch: what "auto" means without a memory probe
CPU_VALUES_PER_THREAD = 4 * 3 * 224 * 224  # input values one CPU chunk holds per thread
PROBE_SIZES = (2, 8)
DEFAULT_MEMORY_BUDGET = 0.8


@dataclass(frozen=True)
class MemoryFit:
    """Predicted peak bytes a step adds for a chunk of ``n`` images: fixed + per_image * n."""

    fixed_bytes: float
    per_image_bytes: float

    def peak(self, n: int) -> float:
        return self.fixed_bytes + self.per_image_bytes * n


@dataclass(frozen=True)
class AutoBatch:
    """What ``max_batch = 0`` resolves to: the chunk size, and on CUDA the memory fit and
    the headroom (bytes) it was sized against."""

    size: int
    fit: MemoryFit | None = None
    headroom_bytes: float | None = None


def check_budget(memory_budget: float) -> None:
    if not 0 < memory_budget <= 1:
        raise InvalidArgument(
            "memory_budget",
            f"must be a fraction of the device memory in (0, 1] (got {memory_budget!r})",
        )


def fit_peaks(probes: Sequence[tuple[int, int]]) -> MemoryFit:
    """Line through (chunk size, peak bytes) probes: the two largest sizes, or one point.

    A single probe, or a slope that measurement noise made non-positive, is taken as
    all per image (no fixed part): never more optimistic than the largest probe.
    """
    points = sorted({n: b for n, b in probes if n > 0}.items())
    if not points:
        raise ValueError("need at least one probe with a chunk size > 0")
    n2, b2 = points[-1]
    if len(points) >= 2:
        n1, b1 = points[-2]
        slope = (b2 - b1) / (n2 - n1)
        if slope > 0:
            return MemoryFit(fixed_bytes=max(0.0, b2 - slope * n2), per_image_bytes=slope)
    return MemoryFit(fixed_bytes=0.0, per_image_bytes=max(b2, 1) / n2)


def headroom_bytes(*, total: int, free: int, reserved: int, allocated: int, budget: float) -> float:
    """Bytes one chunk may add on the device, from ``torch.cuda.mem_get_info`` (free,
    total) and this process's allocator (reserved, allocated).

    In use = total - free - (reserved - allocated): other processes, the CUDA context
    and this process's live tensors; memory torch reserved but does not use is free
    for the chunk. The budget caps the device's total use at ``budget * total``.
    """
    in_use = total - free - max(0, reserved - allocated)
    return budget * total - in_use


def chunk_size(fit: MemoryFit, headroom: float, *, cap: int) -> int:
    """The largest chunk (1..cap) whose predicted peak fits ``headroom``; at least 1."""
    if cap < 1:
        raise ValueError(f"cap must be >= 1 (got {cap})")
    room = headroom - fit.fixed_bytes
    if room <= 0 or fit.per_image_bytes <= 0:
        return 1 if room <= 0 else cap
    return max(1, min(cap, math.floor(room / fit.per_image_bytes)))


def cpu_chunk_cap(
    values_per_image: int, threads: int, per_thread: int = CPU_VALUES_PER_THREAD
) -> int:
    """The most images a CPU chunk holds: ``per_thread`` input values per torch thread, at
    least one image (module docstring)."""
    if values_per_image < 1 or per_thread < 1:
        raise ValueError(
            f"values_per_image and per_thread must be >= 1 (got {values_per_image}, {per_thread})"
        )
    return max(1, per_thread * max(1, threads) // values_per_image)
