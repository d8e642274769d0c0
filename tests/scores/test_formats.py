"""Layer capture on eager modules, exported programs (both forms) and TorchScript."""

from __future__ import annotations

import pytest
import torch
from protolens_server.engine import Classifier, GenerationConfig, capture, generate, layers_of
from protolens_server.errors import InvalidArgument
from protolens_server.scores.scoring import score_prototypes
from scores_synthetic import SPEC, handle_for

DEFAULT = ("block1", "block2", "block3", "block4", "logits")


@pytest.fixture(scope="module")
def program(shapenet):
    batch = torch.export.Dim("batch")
    return torch.export.export(
        shapenet, (torch.rand(2, *SPEC.shape),), dynamic_shapes=({0: batch},)
    )


def test_default_layers_of_the_eager_model(handle):
    assert layers_of(handle).names == DEFAULT


@pytest.mark.parametrize("form", ["module", "unflatten"])
def test_exported_program_capture_matches_eager(handle, shapenet, program, form):
    module = program.module() if form == "module" else torch.export.unflatten(program)
    exported = handle_for(module, shapenet, "exported")
    layer_set = layers_of(exported)
    assert layer_set.names == DEFAULT and layer_set.available
    assert layer_set.mode == ("graph" if form == "module" else "hooks")
    x = torch.rand(5, *SPEC.shape)
    eager = capture(handle, x, layer_set)
    got = capture(exported, x, layer_set)
    for name in DEFAULT:
        assert got[name].shape == eager[name].shape
        assert torch.allclose(got[name], eager[name], atol=1e-5), name
    chosen = layers_of(exported, ["block3.bn", "block1"])
    assert chosen.names == ("block1", "block3.bn", "logits")
    assert capture(exported, x, chosen)["block3.bn"].shape == (5, 32)


def test_exported_program_scores(handle, shapenet, program, reference_folder, tmp_path):
    exported = handle_for(program.module(), shapenet, "exported")
    (proto,) = generate(handle, [6], GenerationConfig(steps=16, equidistant_steps=2), seed=1)
    (eager,) = score_prototypes(handle, [proto], reference_folder, cache_dir=tmp_path)
    (graph,) = score_prototypes(exported, [proto], reference_folder, cache_dir=tmp_path)
    assert graph.layer_names == list(DEFAULT) and graph.layers_available
    assert graph.path_similarity == pytest.approx(eager.path_similarity, abs=1e-4)


def test_static_batch_program_is_fed_its_batch_size(shapenet):
    static = torch.export.export(shapenet, (torch.rand(2, *SPEC.shape),)).module()
    model = Classifier(static, SPEC, 10)
    layer_set = layers_of(model)
    assert layer_set.fixed_batch == 2
    x = torch.rand(5, *SPEC.shape)
    got = capture(model, x, layer_set)
    with torch.no_grad():
        assert torch.allclose(got["logits"], shapenet(SPEC.normalise(x)), atol=1e-5)


def test_torchscript_reports_layers_unavailable_but_scores_logits(
    handle, shapenet, reference_folder, tmp_path
):
    scripted = torch.jit.trace(shapenet, torch.rand(2, *SPEC.shape))
    ts = handle_for(scripted, shapenet, "torchscript")
    (proto,) = generate(handle, [0], GenerationConfig(steps=16, equidistant_steps=2), seed=2)
    (scores,) = score_prototypes(ts, [proto], reference_folder, cache_dir=tmp_path)
    d = scores.to_dict()
    assert d["layers_available"] is False
    assert d["reason"] == "TorchScript modules do not expose inner layers"
    assert d["layers"] == ["logits"]
    (eager,) = score_prototypes(handle, [proto], reference_folder, cache_dir=tmp_path)
    assert d["spearman"][0] == pytest.approx(eager.to_dict()["spearman"][-1], abs=1e-6)
    assert d["path_similarity"] == pytest.approx(d["spearman_normalised"][0])
    assert d["robustness"]["probability_mean_over_transforms"] is not None
    with pytest.raises(InvalidArgument, match="TorchScript modules do not expose inner layers"):
        score_prototypes(ts, [proto], reference_folder, layers=["block1"], cache_dir=tmp_path)


class _Nested(torch.nn.Module):
    """Containers to expand, a shared activation, pooling and dropout to skip."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, 2, 1), torch.nn.BatchNorm2d(8))
        self.act = torch.nn.ReLU()
        self.blocks = torch.nn.ModuleList(
            [torch.nn.Sequential(torch.nn.Conv2d(8, 8, 3, 1, 1)) for _ in range(3)]
        )
        self.pool = torch.nn.AdaptiveAvgPool2d(1)
        self.drop = torch.nn.Dropout(0.2)
        self.fc = torch.nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.stem(x))
        for block in self.blocks:
            x = self.act(block(x)) + x
        return self.fc(self.drop(self.pool(x).flatten(1)))


def test_default_layers_expand_containers_and_skip_stateless_modules():
    model = Classifier(_Nested().eval(), SPEC, 4)
    assert layers_of(model).names == (
        "stem.0",
        "stem.1",
        "blocks.0.0",
        "blocks.1.0",
        "blocks.2.0",
        "logits",
    )
    with pytest.raises(InvalidArgument) as err:
        layers_of(model, ["blocks.7"])
    assert "unknown layer 'blocks.7'" in str(err.value) and "stem.1" in str(err.value)
    with pytest.raises(InvalidArgument, match="unknown layer 'act'"):
        layers_of(model, ["act"])  # shared: called three times, so ambiguous


class _Normalise(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean", torch.full((1, 3, 1, 1), 0.5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x - self.mean


def test_a_wrapper_around_the_whole_network_is_looked_into(shapenet):
    wrapped = torch.nn.Sequential(_Normalise(), shapenet)
    model = Classifier(wrapped, SPEC, 10)
    names = layers_of(model).names
    assert names == ("0", "1.block1", "1.block2", "1.block3", "1.block4", "logits")
