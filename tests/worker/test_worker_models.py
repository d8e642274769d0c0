"""The worker's model LRU: bounded by parameter bytes, digest-checked."""

from __future__ import annotations

import pytest
from protolens_server import metrics
from protolens_server.errors import InvalidArgument
from protolens_server.models.catalog import ModelCatalog
from protolens_server.worker.models import ModelCache, parameter_bytes


def test_lru_keeps_models_within_the_byte_budget(store_root) -> None:
    catalog = ModelCatalog(store_root / "models", builtins=False, cache_bytes=0)
    loads: list[str] = []

    def loader(name: str):
        loads.append(name)
        return catalog.load(name)

    one = parameter_bytes(catalog.load("tiny").module)
    cache = ModelCache(loader, budget_bytes=one)  # room for one model
    tiny = cache.get("tiny", "")
    assert cache.get("tiny", tiny.digest) is tiny and cache.get("tiny") is tiny
    assert loads == ["tiny"]
    cache.get("poison")
    assert len(cache) == 1 and metrics.REGISTRY.get_sample_value("protolens_models_loaded") == 1
    cache.get("tiny", tiny.digest)
    assert loads == ["tiny", "poison", "tiny"]  # evicted, so loaded again
    roomy = ModelCache(loader, budget_bytes=10 * one)
    roomy.get("tiny")
    roomy.get("poison")
    assert len(roomy) == 2 and roomy.loaded_bytes == 2 * one


def test_the_budget_counts_the_engines_batchnorm_folded_copy() -> None:
    from protolens_server.engine import InputSpec, fold_batchnorm
    from protolens_server.models.handle import ModelHandle
    from torch import nn

    net = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 5),
    ).eval()  # fmt: skip
    handle = ModelHandle("bn", "test:bn", net, InputSpec(3, 8, 8), tuple("abcde"), "0" * 64)
    cache = ModelCache(lambda name: handle, budget_bytes=1 << 30)
    cache.get("bn")
    fast = fold_batchnorm(net)  # made at load time, the engine reuses it
    assert fast is not net and fold_batchnorm(net) is fast
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fast.modules())
    assert cache.loaded_bytes == parameter_bytes(net) + parameter_bytes(fast)
    assert cache.loaded_bytes > parameter_bytes(net)


def test_a_model_changed_since_submit_is_refused(store_root) -> None:
    catalog = ModelCatalog(store_root / "models", builtins=False)
    cache = ModelCache(catalog.load, budget_bytes=1 << 30)
    with pytest.raises(InvalidArgument, match="changed since the job was submitted"):
        cache.get("tiny", "0" * 64)
