"""The local commands show a reference set's caveats beside the scores they concern:
``protolens generate --reference`` (stderr, text column, JSON record, plot title) and
``protolens check --reference`` (stderr, JSON report, HTML report)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from protolens.cli import main
from test_reference_caveats import CLASSES, SIZE, Tiny, write_set

FAST = ["--steps", "4", "--lr", "0.05", "--equidistant-steps", "0"]


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    net = Tiny(3).eval().requires_grad_(False)
    program = torch.export.export(
        net,
        (torch.rand(2, 3, SIZE, SIZE),),
        dynamic_shapes={"x": {0: torch.export.Dim("batch", min=1, max=1024)}},
    )
    path = tmp_path_factory.mktemp("caveat_cli") / "tiny.pt2"
    torch.export.save(program, path)
    sidecar = {"channels": 3, "height": SIZE, "width": SIZE, "mean": 0.5, "std": 0.25}
    path.with_suffix(".json").write_text(json.dumps({**sidecar, "class_names": list(CLASSES)}))
    return path


def test_generate_prints_the_caveat_of_the_grey_class(capsys, model_file, tmp_path, monkeypatch):
    monkeypatch.setenv("PROTOLENS_CACHE_DIR", str(tmp_path / "cache"))
    refs = write_set(tmp_path / "refs", grey=(2,))
    out = tmp_path / "out"
    code = main(
        ["generate", "-m", str(model_file), "-t", "0", "-t", "2", *FAST,
         "--robustness-samples", "0", "--reference", str(refs), "--out", str(out)]
    )  # fmt: skip
    captured = capsys.readouterr()
    assert code == 0, captured.err
    warnings = [line for line in captured.err.splitlines() if "GREYSCALE_CLASS" in line]
    assert len(warnings) == 1, captured.err  # once, however many prototypes it concerns
    assert warnings[0].startswith("protolens: warning: GREYSCALE_CLASS: reference class 2")
    lines = captured.out.splitlines()
    assert "caveats=" not in lines[0] and lines[1].endswith("caveats=GREYSCALE_CLASS")
    records = [json.loads(p.read_text()) for p in out.glob("*.json")]
    by_class = {r["target"]["classes"][0]: r["scores"]["caveats"] for r in records}
    assert by_class[0] == [] and [c["code"] for c in by_class[2]] == ["GREYSCALE_CLASS"]


def test_check_reports_the_caveat(capsys, model_file, tmp_path, monkeypatch):
    monkeypatch.setenv("PROTOLENS_CACHE_DIR", str(tmp_path / "cache"))
    refs = write_set(tmp_path / "refs", grey=(2,))
    report = tmp_path / "report.html"
    code = main(
        ["check", str(model_file), "--classes", "0", "2", "--steps", "4", "--lr", "0.05",
         "--set", "equidistant_steps=0", "--reference", str(refs),
         "--report", str(report), "--json"]
    )  # fmt: skip
    captured = capsys.readouterr()
    assert code in (0, 1), captured.err  # pass or fail by policy: the caveat is no verdict
    doc = json.loads(captured.out)
    assert [(c["code"], c["classes"]) for c in doc["caveats"]] == [("GREYSCALE_CLASS", [2])]
    assert "protolens check: warning: GREYSCALE_CLASS: reference class 2" in captured.err
    html = report.read_text()
    assert "Reference-set caveats" in html and "GREYSCALE_CLASS" in html
