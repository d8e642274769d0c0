"""``protolens isolate`` on a tiny model: the mask, the RGBA isolated image, the record,
one-line errors."""

from __future__ import annotations

import json

import torch
from PIL import Image
from protolens.cli import main
from protolens_server.imageio import save_png


def test_isolate_writes_mask_isolated_and_record(capsys, cli_models, tmp_path) -> None:
    photo = save_png(
        torch.rand(3, 24, 24, generator=torch.Generator().manual_seed(1)), tmp_path / "my photo.png"
    )
    out = tmp_path / "out"
    args = [str(photo), "--model", str(cli_models["fruit"]), "--target", "cherry"]
    code = main(["isolate", *args, "--steps", "6", "--seed", "3", "--out", str(out), "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    record = json.loads(captured.out)
    stem = "my_photo-2-cherry"
    assert record["schema"] == "protolens.isolation.v1" and record["target"] == {
        "class": 2,
        "name": "cherry",
    }
    assert record["mask_file"] == f"{stem}-mask.png" and record["config"]["steps"] == 6
    for key in ("probability", "probability_kept", "probability_removed", "mask_mean"):
        assert 0 <= record[key] <= 1
    assert json.loads((out / f"{stem}.json").read_text()) == record
    mask = Image.open(out / record["mask_file"])
    isolated = Image.open(out / record["isolated_file"])
    assert mask.mode == "L" and mask.size == (16, 16)  # the model's input size
    assert isolated.mode == "RGBA" and isolated.getchannel("A").tobytes() == mask.tobytes()


def test_isolate_errors_are_one_line(capsys, cli_models, tmp_path) -> None:
    photo = save_png(torch.rand(3, 16, 16), tmp_path / "p.png")
    code = main(["isolate", str(photo), "--model", str(cli_models["fruit"]), "--target", "kiwi",
                 "--out", str(tmp_path / "o")])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 1 and "kiwi" in err and len(err.strip().splitlines()) == 1
    code = main(["isolate", str(photo), "--model", str(cli_models["fruit"]), "--target", "1",
                 "--sparsity", "-2", "--out", str(tmp_path / "o")])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 1 and "sparsity" in err


def test_isolate_says_what_it_is_doing(capsys, cli_models, tmp_path) -> None:
    """The README's isolate ran 1 min 42 s on a 224 px photo with nothing on the screen, on
    a terminal or not; now the bar (a terminal) or one line per phase and tenth of the steps."""
    photo = save_png(torch.rand(3, 16, 16), tmp_path / "p.png")
    code = main(["isolate", str(photo), "--model", str(cli_models["fruit"]), "--target", "1",
                 "--steps", "20", "--out", str(tmp_path / "o")])  # fmt: skip
    captured = capsys.readouterr()
    assert code == 0, captured.err
    lines = captured.err.splitlines()
    assert lines[0].startswith("protolens isolate: ") and "fruit.pt loaded in" in lines[0]
    assert lines[1] == "protolens isolate: optimising the mask"
    assert lines[-1].startswith("protolens isolate: optimising: step 20/20 p="), lines
    assert "cherry" not in captured.out and captured.out.count("\n") == 1  # the result line
