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
    """Jobs with the same model and config (seeds and targets may differ), within a budget."""

    budget: int
    deliveries: list[Delivery] = field(default_factory=list)
    key: str = ""
    images: int = 0

    def accepts(self, spec: JobSpec) -> bool:
        """An empty batch takes any job (even one over budget: the engine chunks it)."""
        if not self.deliveries:
            return True
        return batch_key(spec) == self.key and self.images + job_images(spec) <= self.budget

    def add(self, delivery: Delivery) -> None:
        spec = delivery.record.spec
        if not self.deliveries:
            self.key = batch_key(spec)
        self.deliveries.append(delivery)
        self.images += job_images(spec)

    @property
    def full(self) -> bool:
        return self.images >= self.budget

    def __len__(self) -> int:
        return len(self.deliveries)

    def __bool__(self) -> bool:
        return bool(self.deliveries)
