"""Unit targets through the service: GetModel lists layers; a channel target runs on a worker
and raises that channel; the second identical request is a cache hit; a bad layer or unit
is INVALID_ARGUMENT naming it and what exists; the CLI speaks the same syntax."""

from __future__ import annotations

import pytest
import torch
from protolens import AsyncClient, UnitTerm, unit_target
from protolens import errors as sdk
from protolens.cli import main
from protolens_server.api.testkit import tiny_eager_net
from protolens_server.config import Settings
from protolens_server.imageio import decode_png
from protolens_server.worker import Worker

CONFIG = {"steps": 48, "lr": 0.1, "transforms": "none", "hf_penalty": 0.1, "equidistant_steps": 4}


def _channel_means(image: torch.Tensor, layer: str) -> torch.Tensor:
    net = tiny_eager_net()
    seen: dict[str, torch.Tensor] = {}
    net.get_submodule(layer).register_forward_hook(lambda _m, _i, o: seen.__setitem__("o", o))
    with torch.no_grad():
        net((image[None] - 0.5) / 0.25)
    return seen["o"][0].mean(dim=(1, 2))


async def test_layers_are_listed_with_shapes(modes_address: str) -> None:
    async with AsyncClient(modes_address) as client:
        layers = {layer.name: layer.shape for layer in await client.layers("tinyeager")}
        listed = await client.list_models()
        scripted = await client.layers("tiny")
    assert layers["features.3"] == (8, 8, 8) and layers["head"] == (5,)
    assert list(layers)[-1] == "logits"
    assert all(m.layers == () for m in listed)  # GetModel only
    assert [layer.name for layer in scripted] == ["logits"]  # TorchScript: no inner layers


async def test_channel_target_runs_raises_its_channel_and_is_cached(
    modes_address: str, modes_settings: Settings
) -> None:
    target = unit_target("layer:features.3:channel:5")
    async with AsyncClient(modes_address) as client:
        job = await client.create_prototype_job("tinyeager", [target], config=CONFIG, seed=1)
        async with Worker(modes_settings, name="w-units") as worker:
            assert await worker.run_once() == 1
        job = await client.get_job(job.name)
        assert job.state == "SUCCEEDED", job.error
        (resolved,) = job.targets
        assert resolved.kind == "unit" and resolved.units == (UnitTerm("features.3", "channel", 5),)
        proto = await client.get_prototype(job, 0)
        again = await client.create_prototype_job("tinyeager", [target], config=CONFIG, seed=1)
        other = await client.create_prototype_job(
            "tinyeager", [unit_target("layer:features.3:channel:6")], config=CONFIG, seed=1
        )
    assert again.outcome == "cache_hit" and again.state == "SUCCEEDED"
    assert other.outcome == "queued"  # the objective is in the cache key
    image = decode_png(proto.png)
    means = _channel_means(image, "features.3")
    start = _channel_means(torch.full((3, 16, 16), 0.5), "features.3")
    assert means[5] > start[5] + 0.15  # from about 0 at the grey start
    assert job.prototypes[0].logit == pytest.approx(float(means[5]), rel=0.05, abs=0.02)
    assert proto.stem.startswith("layer_features.3_channel_5")


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("layer:features.9:channel:1", ["unknown layer 'features.9'", "features.3", "logits"]),
        ("layer:features.3:channel:8", ["channel 8 does not exist", "0..7"]),
        ("layer:features.3:neuron:1@8,0", ["position (8, 0)", "(7, 7)"]),
    ],
)
async def test_bad_units_are_invalid_argument_naming_what_exists(
    modes_address: str, text: str, words: list[str]
) -> None:
    async with AsyncClient(modes_address) as client:
        with pytest.raises(sdk.InvalidArgumentError) as info:
            await client.create_prototype_job("tinyeager", [1, unit_target(text)])
    assert "targets[1].units[0]" in str(info.value)
    for word in words:
        assert word in str(info.value)


async def test_unit_targets_with_a_reference_set_are_refused(modes_address: str) -> None:
    async with AsyncClient(modes_address) as client:
        with pytest.raises(sdk.InvalidArgumentError, match="unit targets have no class"):
            await client.create_prototype_job(
                "tinyeager", [unit_target("layer:head:channel:1")], reference_set="tinyref"
            )


async def test_cli_lists_layers_and_rejects_bad_syntax(
    modes_address: str, capsys: pytest.CaptureFixture[str]
) -> None:
    import asyncio

    code = await asyncio.to_thread(main, ["layers", "tinyeager", "--address", modes_address])
    out = capsys.readouterr().out
    assert code == 0 and "features.3  8x8x8" in out
    assert out.strip().splitlines()[-1].split() == ["logits", "5"]
    code = await asyncio.to_thread(
        main,
        [
            "submit",
            "--model",
            "tinyeager",
            "--target",
            "layer:features.3:chan:1",
            "--address",
            modes_address,
        ],
    )
    err = capsys.readouterr().err
    assert code == 1 and "unknown unit 'chan'" in err
