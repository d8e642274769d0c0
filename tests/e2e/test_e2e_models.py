"""Models beyond RGB classifiers end to end (API server, worker, Redis all real):

- a Hugging Face ViT registered as a save_pretrained folder in the store, listed with
  its own input spec and labels, a prototype generated and fetched through the SDK;
- a 4-channel model: its prototype's PNG is a preview with provenance text chunks, the
  lossless float tensor comes through GetPrototype(include_float) and ``protolens get
  --float``."""

from __future__ import annotations

import contextlib
import io
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e_stack import stack_settings
from PIL import Image
from protolens import Client
from protolens.errors import InvalidArgumentError
from protolens_server.api.stack import Stack
from protolens_server.api.testkit import VIT_CLASSES, make_tiny_vit

pytestmark = pytest.mark.xdist_group("e2e")

MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)


@pytest.fixture(scope="module")
def hf_stack(_session_redis: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    store = tmp_path_factory.mktemp("hf-store")
    _four_channel_model(store / "four.pt")
    with contextlib.suppress(ModuleNotFoundError):  # no transformers: the ViT test skips
        make_tiny_vit(store / "vit", mean=MEAN, std=STD)  # registering = putting it in the store
    settings = stack_settings(_session_redis, "e2ehf", store)
    with Stack(settings, tmp_path_factory.mktemp("hf-stack"), workers=1) as running:
        yield running


def _four_channel_model(path: Path) -> None:
    import torch

    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(4, 6, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(6, 3),
    ).eval()
    torch.jit.script(net).save(str(path))
    spec = {"channels": 4, "height": 16, "width": 16, "class_names": ["a", "b", "c"]}
    path.with_suffix(".json").write_text(json.dumps(spec))


def test_four_channel_prototype_as_preview_png_and_float_tensor(
    hf_stack: Stack, tmp_path: Path
) -> None:
    import torch
    from protolens.cli import main
    from protolens_server.imageio import decode_png, decode_tensor, png_provenance

    with Client(hf_stack.address, timeout=60) as client:
        job = client.create_prototype_job(
            "four", ["b"], config={"steps": 6, "start": "constant"}, seed=5
        )
        job = client.wait(job, timeout=240)
        assert job.state == "SUCCEEDED", job.error
        plain = client.get_prototype(job, 0)
        assert plain.float_tensor == b""  # only when asked
        proto = client.get_prototype(job, 0, include_float=True)
    image, meta = decode_tensor(proto.float_tensor)
    assert image.shape == (4, 16, 16) and image.dtype == torch.float32
    preview = decode_png(proto.png)
    assert preview.shape == (3, 16, 16)  # channels 0-2
    assert (preview - image[:3]).abs().max() <= 0.5 / 255 + 1e-6
    chunks = png_provenance(proto.png)
    assert chunks == meta
    assert chunks["model"] == "four" and chunks["model_digest"] == proto.provenance.model_digest
    assert (
        chunks["seed"] == str(proto.summary.seed)
        and chunks["target"] == '{"classes":[1],"kind":"prototype"}'
    )
    assert chunks["engine_version"] == proto.provenance.engine_version
    with Client(hf_stack.address, timeout=60) as client:  # other channels, from the tensor
        gray = client.get_prototype(job, 0, preview_channels=[3])
        with pytest.raises(InvalidArgumentError, match="preview_channels"):
            client.get_prototype(job, 0, preview_channels=[0, 9, 1])
    assert (decode_png(gray.png)[0] - image[3]).abs().max() <= 0.5 / 255 + 1e-6
    assert png_provenance(gray.png) == meta
    out = tmp_path / "out"
    args = ["get", job.name, "--address", hf_stack.address, "--out", str(out), "--float"]
    assert main([*args, "--preview-channels", "3,2,1"]) == 0
    shown = decode_png((out / f"{proto.stem}.png").read_bytes())
    assert (shown - image[[3, 2, 1]]).abs().max() <= 0.5 / 255 + 1e-6
    saved = out / f"{proto.stem}.safetensors"
    assert saved.read_bytes() == proto.float_tensor
    record = json.loads((out / f"{proto.stem}.json").read_text())
    assert record["float_file"] == saved.name


def test_vit_folder_is_listed_generated_and_fetched(hf_stack: Stack) -> None:
    pytest.importorskip("transformers", reason="pip install 'protolens[hf]' (in the dev extra)")
    with Client(hf_stack.address, timeout=60) as client:
        deadline = time.monotonic() + 120  # the inspection child imports transformers
        model = client.get_model("vit")
        while model.state == "INSPECTING" and time.monotonic() < deadline:
            time.sleep(1)
            model = client.get_model("vit")
        assert model.usable, model.unusable_reason
        assert model.class_names == VIT_CLASSES and model.source.startswith("hf:")
        spec = model.input_spec
        assert (spec.channels, spec.height, spec.width) == (3, 16, 16)
        assert tuple(spec.mean) == pytest.approx(MEAN) and tuple(spec.std) == pytest.approx(STD)
        job = client.create_prototype_job(
            "vit", ["dog"], config={"steps": 6, "start": "constant"}, seed=3
        )
        job = client.wait(job, timeout=240)
        assert job.state == "SUCCEEDED", job.error
        summary = job.prototypes[0]
        assert summary.target.classes == (1,)  # "dog", by the model's own id2label
        proto = client.get_prototype(job, summary.index)
        image = Image.open(io.BytesIO(proto.png))
        assert image.format == "PNG" and image.size == (16, 16) and image.mode == "RGB"
        assert proto.provenance.model == "vit" and proto.provenance.model_digest == model.digest
        assert 0 < summary.probability <= 1
