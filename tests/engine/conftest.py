"""Fixtures for engine tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from engine_nets import SPEC, tiny_net
from protolens_server.engine import Classifier


@pytest.fixture
def tiny() -> Classifier:
    return Classifier(tiny_net(), SPEC, 10)


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny models run fastest on one thread (and leave the other core to other tests)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
