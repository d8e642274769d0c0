"""Which jobs may share one engine call, and how many images a job adds to a batch."""

from __future__ import annotations

from dataclasses import dataclass, field

from protolens_server.queue.cache import batch_key
from protolens_server.queue.delivery import Delivery
from protolens_server.queue.records import JobSpec


def job_images(spec: JobSpec) -> int:
    """Images a job puts in a batch: targets x prototypes per target."""
    return spec.images


@dataclass
class Batch:
    """Jobs with the same model and config (seeds and targets may differ), within a budget.

    A job about to be claimed is ``plan``ned (its images count against the budget), then
    ``add``ed once claimed or ``unplan``ned if the claim failed: the worker decides a
    whole read's worth of jobs, then claims them in one round trip.
    """

    budget: int
    deliveries: list[Delivery] = field(default_factory=list)
    key: str = ""
    images: int = 0
    planned: int = 0  # jobs planned, not yet added or unplanned

    def accepts(self, spec: JobSpec) -> bool:
        """An empty batch takes any job (even one over budget: the engine chunks it)."""
        if not self.deliveries and not self.planned:
            return True
        return batch_key(spec) == self.key and self.images + job_images(spec) <= self.budget

    def plan(self, spec: JobSpec) -> bool:
        """Hold room for a job about to be claimed, if it fits."""
        if not self.accepts(spec):
            return False
        self._count(spec, +1)
        self.planned += 1
        return True

    def unplan(self, spec: JobSpec) -> None:
        """Give back a planned job's room (its claim failed)."""
        self.planned -= 1
        self._count(spec, -1)

    def add(self, delivery: Delivery, *, planned: bool = False) -> None:
        """A claimed job joins the batch (``planned``: its room is held already)."""
        if planned:
            self.planned -= 1
        else:
            self._count(delivery.record.spec, +1)
        self.deliveries.append(delivery)

    def _count(self, spec: JobSpec, sign: int) -> None:
        if sign > 0 and not self.deliveries and not self.planned:
            self.key = batch_key(spec)
        self.images += sign * job_images(spec)
        if not self.deliveries and not self.planned and self.images == 0:
            self.key = ""

    @property
    def full(self) -> bool:
        return self.images >= self.budget

    def __len__(self) -> int:
        return len(self.deliveries)

    def __bool__(self) -> bool:
        return bool(self.deliveries)
