"""``protolens generate --reference DIR [--layers] [--plots] --json`` on an exported model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from protolens.cli import main
from scores_synthetic import CLASSES, SPEC

# One xdist worker runs the module: the first test finds the reference folder's near
# duplicates (most of its minute) and the learning rate, the others reuse both in process.
# (Groups need pytest < 9 with xdist 3.8: pyproject.toml pins it.)
pytestmark = pytest.mark.xdist_group("cli_scores")

FAST = ["--steps", "16", "--equidistant-steps", "2", "--robustness-samples", "4"]


@pytest.fixture(scope="module")
def exported_model(shapenet, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cli_scores")
    program = torch.export.export(
        shapenet,
        (torch.rand(2, *SPEC.shape),),
        dynamic_shapes={"x": {0: torch.export.Dim("batch", min=1, max=1024)}},
    )
    path = root / "shapes.pt2"
    torch.export.save(program, path)
    sidecar = {"channels": 3, "height": 32, "width": 32, "mean": 0.5, "std": 0.25}
    path.with_suffix(".json").write_text(json.dumps({**sidecar, "class_names": list(CLASSES)}))
    return path


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["generate", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_json_has_scores_and_plots_beside_images(
    capsys, exported_model, reference_folder, tmp_path
):
    out = tmp_path / "out"
    code, stdout, stderr = run(
        capsys, "-m", str(exported_model), "-t", "disc", "-t", "5", *FAST,
        "--reference", str(reference_folder), "--plots", "--json", "--out", str(out),
    )  # fmt: skip
    assert code == 0, stderr
    protos = json.loads(stdout)["prototypes"]
    assert [p["target"]["classes"] for p in protos] == [[0], [5]]
    for p in protos:
        scores = p["scores"]
        assert p["path_similarity"] == scores["path_similarity"]
        assert isinstance(p["path_similarity"], float)
        low, high = p["path_similarity_interval"]
        assert [low, high] == [scores["path_similarity_low"], scores["path_similarity_high"]]
        assert low <= p["path_similarity"] <= high
        assert 1 <= scores["path_similarity_layers"] <= len(scores["layers"])
        assert scores["layers"] == ["block1", "block2", "block3", "block4", "logits"]
        assert scores["layers_available"] is True
        assert len(scores["spearman_normalised"]) == len(scores["layers"])
        assert len(scores["spearman_normalised_low"]) == len(scores["layers"])
        assert scores["robustness"]["transform_samples"] == 4
        assert scores["statistics"]["resamples"] == 200
        plot = out / p["file"].replace(".png", "-scores.png")  # beside the image
        with Image.open(plot) as im:
            assert im.format == "PNG"


def test_layers_option_and_human_output(capsys, exported_model, reference_folder, tmp_path):
    code, stdout, stderr = run(
        capsys, "-m", str(exported_model), "-t", "3", *FAST, "--reference", str(reference_folder),
        "--layers", "block4,block2", "--out", str(tmp_path / "o"), "--json",
    )  # fmt: skip
    assert code == 0, stderr
    (proto,) = json.loads(stdout)["prototypes"]
    assert proto["scores"]["layers"] == ["block2", "block4", "logits"]
    code, stdout, _ = run(
        capsys, "-m", str(exported_model), "-t", "3", *FAST, "--reference", str(reference_folder),
        "--out", str(tmp_path / "h"),
    )  # fmt: skip
    assert code == 0 and "path_similarity=" in stdout and "/5 layers)" in stdout


def test_errors_are_one_line(capsys, exported_model, reference_folder, tmp_path):
    code, _, err = run(
        capsys, "-m", str(exported_model), "-t", "3", *FAST, "--plots", "--out", str(tmp_path),
    )  # fmt: skip
    assert code == 1 and "--plots: needs --reference DIR" in err
    code, _, err = run(
        capsys, "-m", str(exported_model), "-t", "3", *FAST, "--reference", str(reference_folder),
        "--layers", "nope", "--out", str(tmp_path),
    )  # fmt: skip
    assert code == 1 and "unknown layer 'nope'" in err and "block1" in err
    empty = tmp_path / "refs"
    (empty / "0").mkdir(parents=True)
    code, _, err = run(
        capsys, "-m", str(exported_model), "-t", "3", *FAST, "--reference", str(empty),
        "--out", str(tmp_path / "x"),
    )  # fmt: skip
    assert code == 1 and str(empty / "0") in err and len(err.strip().splitlines()) == 1
