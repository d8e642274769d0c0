"""Hugging Face transformers classifiers and timm models from local folders, made here
with the libraries' own config classes (no hub), plus models whose forward returns a
dict or a ``ModelOutput``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from protolens_server.api.testkit import VIT_CLASSES, make_tiny_vit
from protolens_server.errors import InvalidModel
from protolens_server.models import ModelCatalog, hf, load_model, resolve_class, timm_models
from protolens_server.models._logits import LogitsOnly
from protolens_server.models.inspection import InspectionLimits, Inspector
from tiny_nets_models import example_input

transformers = pytest.importorskip(
    "transformers", reason="pip install 'protolens[hf]' (in the dev extra)"
)

MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)


@pytest.fixture(scope="module")
def vit_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_vit(tmp_path_factory.mktemp("hf") / "vit", mean=MEAN, std=STD)


def _reference_logits(folder: Path, x01: torch.Tensor) -> torch.Tensor:
    """What transformers itself computes for images x in [0,1] (its own normalisation)."""
    model = transformers.ViTForImageClassification.from_pretrained(folder).eval()
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    with torch.no_grad():
        return model(pixel_values=(x01 - mean) / std).logits


def test_vit_folder_loads_with_its_own_spec_labels_and_logits(vit_dir: Path) -> None:
    handle = load_model(str(vit_dir))
    spec = handle.input_spec
    assert (spec.channels, spec.height, spec.width) == (3, 16, 16)
    assert spec.mean == pytest.approx(MEAN) and spec.std == pytest.approx(STD)
    assert handle.class_names == VIT_CLASSES and resolve_class(handle, "dog") == 1
    assert handle.source == f"hf:{vit_dir}" and handle.metadata["library"] == "transformers"
    assert isinstance(handle.module, LogitsOnly)  # ImageClassifierOutput -> logits
    x01 = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    mean = torch.tensor(spec.mean).view(1, 3, 1, 1)
    std = torch.tensor(spec.std).view(1, 3, 1, 1)
    with torch.no_grad():
        ours = handle.module((x01 - mean) / std)
    assert torch.allclose(ours, _reference_logits(vit_dir, x01), atol=1e-5)
    assert not any(p.requires_grad for p in handle.module.parameters())
    # input gradients flow (what the engine needs)
    x = x01.clone().requires_grad_(True)
    handle.module((x - mean) / std)[:, 2].sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_vit_digest_is_stable_and_follows_weights_not_labels(vit_dir: Path, tmp_path: Path) -> None:
    first = load_model(f"hf:{vit_dir}")
    assert load_model(str(vit_dir)).digest == first.digest
    relabelled = tmp_path / "relabelled"
    shutil.copytree(vit_dir, relabelled)
    config = json.loads((relabelled / "config.json").read_text())
    config["id2label"] = {"0": "tiger", "1": "wolf", "2": "eagle"}
    config["transformers_version"] = "0.0.0"
    (relabelled / "config.json").write_text(json.dumps(config))
    other = load_model(str(relabelled))
    assert other.class_names == ("tiger", "wolf", "eagle") and other.digest == first.digest
    retrained = make_tiny_vit(tmp_path / "retrained", seed=1, mean=MEAN, std=STD)
    assert load_model(str(retrained)).digest != first.digest


def test_vit_without_preprocessor_uses_config_size(tmp_path: Path) -> None:
    folder = make_tiny_vit(tmp_path / "bare", preprocessor=False)
    config = json.loads((folder / "config.json").read_text())
    config["id2label"] = {str(i): f"LABEL_{i}" for i in range(3)}  # transformers' placeholders
    (folder / "config.json").write_text(json.dumps(config))
    handle = load_model(str(folder))
    assert (handle.input_spec.height, handle.input_spec.width) == (16, 16)
    assert handle.class_names == ("class 0", "class 1", "class 2")


def test_preprocessor_spec_rescale_crop_and_no_normalise(tmp_path: Path) -> None:
    (tmp_path / "preprocessor_config.json").write_text(
        json.dumps(
            {
                "do_center_crop": True,
                "crop_size": {"height": 24, "width": 20},
                "size": {"shortest_edge": 32},
                "do_rescale": False,  # the model takes 0..255 pixels
                "image_mean": [127.5] * 3,
                "image_std": [127.5] * 3,
            }
        )
    )
    spec = hf.spec_of(tmp_path, {"num_channels": 3})
    assert (spec.height, spec.width) == (24, 20)
    assert spec.mean == pytest.approx((0.5,) * 3) and spec.std == pytest.approx((0.5,) * 3)
    (tmp_path / "preprocessor_config.json").write_text(
        json.dumps({"size": {"shortest_edge": 8}, "do_normalize": False})
    )
    spec = hf.spec_of(tmp_path, {"num_channels": 1})
    assert (spec.channels, spec.height, spec.mean, spec.std) == (1, 8, (0.0,), (1.0,))


def test_custom_code_and_pickled_weights_are_refused(vit_dir: Path, tmp_path: Path) -> None:
    remote = tmp_path / "remote"
    shutil.copytree(vit_dir, remote)
    config = json.loads((remote / "config.json").read_text())
    config["auto_map"] = {"AutoModelForImageClassification": "modeling_evil.EvilModel"}
    (remote / "config.json").write_text(json.dumps(config))
    (remote / "modeling_evil.py").write_text("raise SystemExit('ran code from the folder')\n")
    with pytest.raises(InvalidModel, match="custom modelling code"):
        load_model(str(remote))
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    shutil.copy(vit_dir / "config.json", pickled / "config.json")
    state = transformers.ViTForImageClassification.from_pretrained(vit_dir).state_dict()
    torch.save(state, pickled / "pytorch_model.bin")
    with pytest.raises(InvalidModel, match=r"pytorch_model\.bin is a pickle"):
        load_model(str(pickled))


def test_weights_that_do_not_fit_the_config_are_refused(vit_dir: Path, tmp_path: Path) -> None:
    wrong = tmp_path / "wrong"
    shutil.copytree(vit_dir, wrong)
    config = json.loads((wrong / "config.json").read_text())
    config["hidden_size"], config["intermediate_size"] = 32, 64
    (wrong / "config.json").write_text(json.dumps(config))
    with pytest.raises(InvalidModel, match="weights do not fit the config"):
        load_model(str(wrong))


def test_dict_output_model_is_wrapped_to_logits() -> None:
    handle = load_model("factory:tiny_nets_models:dict_output_net")
    assert isinstance(handle.module, LogitsOnly) and handle.num_classes == 5
    x = example_input(2)
    with torch.no_grad():
        assert torch.equal(handle.module(x), handle.module.model(x)["logits"])


def test_store_lists_hf_folders_flat_and_versioned_and_inspects_them(
    vit_dir: Path, tmp_path: Path
) -> None:
    store = tmp_path / "store"
    shutil.copytree(vit_dir, store / "vit")
    shutil.copytree(vit_dir, store / "vitv" / "1")
    make_tiny_vit(store / "vitv" / "2" / "hf", seed=2)
    evil = store / "evil"
    shutil.copytree(vit_dir, evil)
    config = json.loads((evil / "config.json").read_text())
    config["auto_map"] = {"AutoModelForImageClassification": "x.Y"}
    (evil / "config.json").write_text(json.dumps(config))
    catalog = ModelCatalog(store, builtins=False, inspector=Inspector(InspectionLimits(120.0)))
    assert catalog.names() == ["evil", "vit", "vitv@1", "vitv@2"]
    info = catalog.show("vit")
    assert info.usable, info.unusable_reason
    assert info.class_names == VIT_CLASSES and info.input_spec.mean == pytest.approx(MEAN)
    assert info.digest == load_model(str(vit_dir)).digest
    assert catalog.show("vitv@1").digest == info.digest
    assert catalog.show("vitv").digest not in ("", info.digest)  # the latest: vitv@2
    bad = catalog.show("evil")
    assert not bad.usable and "custom modelling code" in bad.unusable_reason
    handle = catalog.load("vit")
    assert handle.digest == info.digest and handle.name == "vit"


def test_timm_config_gives_spec_and_labels() -> None:
    config = {
        "architecture": "vit_tiny_patch16_224",
        "num_classes": 2,
        "pretrained_cfg": {"input_size": [3, 32, 32], "mean": [0.1, 0.2, 0.3], "std": [1, 2, 3]},
        "label_names": ["n01", "n02"],
        "label_descriptions": {"n01": "tench", "n02": "goldfish"},
    }
    spec = timm_models.spec_of(config)
    assert (spec.channels, spec.height, spec.width) == (3, 32, 32)
    assert spec.mean == (0.1, 0.2, 0.3) and spec.std == (1.0, 2.0, 3.0)
    labels = timm_models.labels_of(config)
    assert labels.names == ("n01", "n02") and labels.aliases == (("tench",), ("goldfish",))


def _first(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__


def _timm_or_skip():
    try:
        import timm
    except (ImportError, RuntimeError) as exc:  # timm imports torchvision at import time
        pytest.skip(
            f"the timm adapter is untested here: timm cannot be imported ({_first(exc)}). "
            "timm requires torchvision, and none loads beside this machine's torch 2.13.0 CPU "
            "build (the torchvision 0.28.0 pip reaches is a CUDA build), so the dev extra "
            "leaves timm out (docs/models.md)"
        )
    return timm


def test_timm_folder_loads_with_its_own_spec_and_labels(tmp_path: Path) -> None:
    timm = _timm_or_skip()
    from safetensors.torch import save_file

    kwargs = {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 1, "num_heads": 2}
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=2, **kwargs)
    folder = tmp_path / "timmvit"
    folder.mkdir()
    save_file(model.state_dict(), str(folder / "model.safetensors"))
    config = {
        "architecture": "vit_tiny_patch16_224",
        "num_classes": 2,
        "model_args": kwargs,
        "pretrained_cfg": {"input_size": [3, 32, 32], "mean": [0.5] * 3, "std": [0.5] * 3},
        "label_names": ["a", "b"],
    }
    (folder / "config.json").write_text(json.dumps(config))
    handle = load_model(str(folder))
    assert handle.class_names == ("a", "b") and handle.input_spec.height == 32
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(handle.module(x), model.eval()(x), atol=1e-5)


def test_vit_exported_as_pt2_loads_with_same_logits(vit_dir: Path, tmp_path: Path) -> None:
    """A ViT-style ``.pt2`` (attention, layer norm, GELU, class token): the HF ViT reduced
    to its logits and exported with a dynamic batch, read by protolens' own .pt2 reader."""
    model = LogitsOnly(transformers.ViTForImageClassification.from_pretrained(vit_dir).eval())
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(5))
    program = torch.export.export(
        model, (x,), dynamic_shapes={"x": {0: torch.export.Dim("batch", min=1, max=512)}}
    )
    path = tmp_path / "vit.pt2"
    torch.export.save(program, path)
    (tmp_path / "vit.json").write_text(
        # mean/std only: the 16x16 shape comes from the program
        json.dumps({"mean": list(MEAN), "std": list(STD), "class_names": list(VIT_CLASSES)})
    )
    handle = load_model(str(path))
    assert handle.format == "exported" and handle.class_names == VIT_CLASSES
    assert (handle.input_spec.height, handle.input_spec.width) == (16, 16)
    assert handle.input_spec.mean == pytest.approx(MEAN)
    batch = torch.randn(5, 3, 16, 16)
    with torch.no_grad():
        assert torch.allclose(handle.module(batch), model(batch), atol=1e-5)
    xg = batch.clone().requires_grad_(True)
    handle.module(xg)[:, 0].sum().backward()
    assert xg.grad is not None and xg.grad.abs().sum() > 0


def test_timm_folder_without_torchvision_is_refused_with_the_reason(tmp_path: Path) -> None:
    """Where timm cannot import (no torchvision, as on this project's machines), a timm
    folder is a clear error, and an UNUSABLE model in the store, never a crash."""
    try:
        import timm  # noqa: F401
    except (ImportError, RuntimeError):  # a torchvision that does not load: RuntimeError
        pass
    else:
        pytest.skip("timm imports here: test_timm_folder_loads_... covers loading")
    from safetensors.torch import save_file

    folder = tmp_path / "store" / "timmvit"
    folder.mkdir(parents=True)
    save_file({"head.weight": torch.zeros(2, 4)}, str(folder / "model.safetensors"))
    config = {"architecture": "vit_tiny_patch16_224", "num_classes": 2, "label_names": ["a", "b"]}
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(InvalidModel, match="needs timm and torchvision"):
        load_model(str(folder))
    info = ModelCatalog(tmp_path / "store", builtins=False).show("timmvit")
    assert not info.usable and "torchvision" in info.unusable_reason


def _tiny_convnext(folder: Path, processor: object) -> Path:
    """A tiny ConvNeXt classifier saved with ``save_pretrained``, with ``processor`` (one of
    transformers' own image processor classes) saved beside it: the processor's JSON is
    what the library writes, not a hand-made file."""
    config = transformers.ConvNextConfig(
        num_channels=3,
        hidden_sizes=[8, 16],
        depths=[1, 1],
        num_stages=2,
        num_labels=3,
        id2label=dict(enumerate(VIT_CLASSES)),
        label2id={n: i for i, n in enumerate(VIT_CLASSES)},
    )
    torch.manual_seed(0)
    transformers.ConvNextForImageClassification(config).eval().save_pretrained(folder)
    processor.save_pretrained(folder)  # type: ignore[attr-defined]
    return folder


@pytest.mark.parametrize(
    ("kind", "size", "crop", "expected"),
    [
        ("ConvNextImageProcessor", {"shortest_edge": 32}, None, (32, 32)),  # crop_pct crop
        ("ViTImageProcessor", {"height": 24, "width": 20}, None, (24, 20)),
        ("DeiTImageProcessor", {"height": 40, "width": 40}, {"height": 32, "width": 28}, (32, 28)),
        ("BitImageProcessor", {"shortest_edge": 40}, {"height": 24, "width": 24}, (24, 24)),
    ],
)
def test_processor_size_forms_give_the_input_the_processor_makes(
    tmp_path: Path, kind: str, size: dict, crop: dict | None, expected: tuple[int, int]
) -> None:
    """``size`` as ``shortest_edge`` or ``height``/``width``, with and without a centre
    crop: the handle's input spec is the size and normalisation the model's own processor
    feeds it, and its logits on an image equal the processor-then-model pipeline's."""
    from PIL import Image

    mean, std = [0.4, 0.5, 0.6], [0.3, 0.2, 0.25]
    options = {"size": size, "image_mean": mean, "image_std": std}
    if crop is not None:
        options["crop_size"] = crop
    processor = getattr(transformers, kind)(**options)
    handle = load_model(str(_tiny_convnext(tmp_path / kind, processor)))
    spec = handle.input_spec
    assert (spec.height, spec.width) == expected
    assert spec.mean == pytest.approx(mean) and spec.std == pytest.approx(std)
    photo = torch.randint(0, 256, (60, 50, 3), generator=torch.Generator().manual_seed(1))
    made = processor(Image.fromarray(photo.to(torch.uint8).numpy()), return_tensors="pt")
    assert tuple(made["pixel_values"].shape) == (1, 3, *expected)  # what the model is fed
    # an image already at the model's size: the processor only rescales and normalises
    fitted = torch.randint(0, 256, (*expected, 3), generator=torch.Generator().manual_seed(2))
    theirs = processor(
        Image.fromarray(fitted.to(torch.uint8).numpy()), do_resize=False, do_center_crop=False,
        return_tensors="pt",
    )["pixel_values"]  # fmt: skip
    x01 = fitted.permute(2, 0, 1).float().div(255).unsqueeze(0)
    ours = (x01 - torch.tensor(spec.mean).view(1, 3, 1, 1)) / torch.tensor(spec.std).view(
        1, 3, 1, 1
    )
    assert torch.allclose(ours, theirs, atol=1e-5)
    model = transformers.ConvNextForImageClassification.from_pretrained(tmp_path / kind).eval()
    with torch.no_grad():
        assert torch.allclose(handle.module(ours), model(pixel_values=theirs).logits, atol=1e-4)


def test_timm_with_a_torchvision_that_does_not_load_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A torchvision built for another torch (here: the CUDA 0.28.0 beside the CPU torch)
    makes ``import timm`` raise RuntimeError, not ImportError: still a clear InvalidModel."""
    fake = tmp_path / "site" / "timm"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text(
        "raise RuntimeError('operator torchvision::nms does not exist')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.delitem(__import__("sys").modules, "timm", raising=False)
    folder = tmp_path / "timmvit"
    folder.mkdir()
    from safetensors.torch import save_file

    save_file({"head.weight": torch.zeros(2, 4)}, str(folder / "model.safetensors"))
    config = {"architecture": "vit_tiny_patch16_224", "num_classes": 2}
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(InvalidModel, match="torchvision::nms"):
        load_model(str(folder))


@pytest.mark.parametrize(
    "written",
    [
        {"size": {"height": 40, "width": 40}, "crop_size": {"height": 32, "width": 28}},
        {"size": {"shortest_edge": 40}, "crop_size": {"height": 32, "width": 28}},
        {"do_normalize": True},  # everything else from the class
    ],
)
@pytest.mark.parametrize(
    "kind", ["DeiTImageProcessor", "CLIPImageProcessor", "EfficientNetImageProcessor"]
)
def test_keys_a_preprocessor_config_leaves_out_take_the_processor_class_defaults(
    tmp_path: Path, kind: str, written: dict
) -> None:
    """A hand-written ``preprocessor_config.json`` that leaves keys out (``do_center_crop``,
    ``size``, ``image_mean``...): transformers fills them from the processor class, so
    the input spec must too (DeiT and CLIP crop by default, EfficientNet does not)."""
    from PIL import Image

    (tmp_path / "preprocessor_config.json").write_text(
        json.dumps({"image_processor_type": kind, **written})
    )
    processor = transformers.AutoImageProcessor.from_pretrained(tmp_path, local_files_only=True)
    # a square photo: a shortest_edge resize without a crop keeps the aspect ratio (the
    # spec then takes the square of that edge)
    photo = Image.fromarray(torch.zeros(300, 300, 3, dtype=torch.uint8).numpy())
    made = processor(photo, return_tensors="pt")["pixel_values"]
    spec = hf.spec_of(tmp_path, {"num_channels": 3})
    assert (spec.height, spec.width) == tuple(made.shape[-2:])
    scale = float(processor.rescale_factor) * 255
    assert spec.mean == pytest.approx([m / scale for m in processor.image_mean])
    assert spec.std == pytest.approx([s / scale for s in processor.image_std])
