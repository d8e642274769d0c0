"""``protolens generate`` end to end on a tiny model: files, JSON, exit codes, one-line errors."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
from PIL import Image
from protolens.cli import main

FAST = ["--steps", "4", "--equidistant-steps", "2"]


PROGRESS = "protolens generate: "  # what it is doing, on stderr when it is not a terminal


def generate(capsys, *args: str) -> tuple[int, str, str]:
    """Exit code, stdout and stderr less the progress lines (tested on their own below)."""
    code = main(["generate", *args])
    captured = capsys.readouterr()
    lines = captured.err.splitlines(keepends=True)
    return code, captured.out, "".join(line for line in lines if not line.startswith(PROGRESS))


def test_writes_pngs_and_one_json_document(capsys, cli_models, tmp_path) -> None:
    out = tmp_path / "out"
    code, stdout, stderr = generate(
        capsys, "--model", str(cli_models["fruit"]), "--target", "Cherry", "--target", "4",
        "--antitype", "banana", "--hybrid", "apple,date", "--prototypes", "2", "--seed", "7",
        *FAST, "--out", str(out), "--json",
    )  # fmt: skip
    assert code == 0, stderr
    assert stderr == ""  # no warning (the progress lines aside)
    doc = json.loads(stdout)
    assert doc["model"]["name"] == "fruit" and len(doc["model"]["digest"]) == 64
    assert doc["seed"] == 7 and doc["config"]["steps"] == 4 and doc["out"] == str(out)
    protos = doc["prototypes"]
    assert len(protos) == 8  # 4 targets x 2 prototypes
    first = protos[0]
    assert first["schema"] == "protolens.prototype.v1"
    assert first["target"] == {"classes": [2], "class_names": ["cherry"], "kind": "prototype"}
    assert first["file"] == "2-cherry-0.png"
    assert [p["target"]["kind"] for p in protos[::2]] == [
        "prototype",
        "prototype",
        "antitype",
        "hybrid",
    ]
    assert protos[4]["file"] == "anti-1-banana-0.png"
    assert protos[7]["file"] == "0+3-apple+date-1.png" and protos[7]["target_index"] == 1
    assert protos[7]["target"]["classes"] == [0, 3]
    assert protos[7]["target"]["class_names"] == ["apple", "date"]
    for p in protos:
        assert 0.0 <= p["probability"] <= 1.0 and isinstance(p["logit"], float)
        assert len(p["top5"]) == 5 and {"index", "name", "probability"} == set(p["top5"][0])
        assert p["steps"] == 4 and p["provenance"]["config"]["prototypes"] == 2
        assert p["provenance"]["model"] == "fruit" and p["scores"] is None
        with Image.open(out / p["file"]) as img:
            assert img.size == (16, 16) and img.mode == "RGB"
        # the record beside each PNG is the one printed
        assert json.loads((out / p["file"]).with_suffix(".json").read_text()) == p
    names = sorted(f.name for f in out.iterdir())
    assert names == sorted(n for p in protos for n in (p["file"], p["file"][:-4] + ".json"))


def test_same_seed_same_pixels_and_human_output(capsys, cli_models, tmp_path) -> None:
    runs = []
    for name in ("a", "b"):
        code, stdout, _ = generate(
            capsys, "-m", str(cli_models["fruit"]), "-t", "1", *FAST, "--out", str(tmp_path / name)
        )
        assert code == 0
        runs.append((tmp_path / name / "1-banana-0.png").read_bytes())
        assert "1-banana-0.png  banana  p=" in stdout
    assert runs[0] == runs[1]


def test_set_reaches_any_generation_option(capsys, cli_models, tmp_path) -> None:
    code, stdout, stderr = generate(
        capsys, "-m", str(cli_models["fruit"]), "-t", "1", *FAST, "--json",
        "--set", "margin_temperature=3", "--set", "decorrelate=false", "--set", "lr=0.1",
        "--out", str(tmp_path / "o"),
    )  # fmt: skip
    assert code == 0, stderr
    config = json.loads(stdout)["config"]
    assert config["margin_temperature"] == 3.0 and config["decorrelate"] is False
    assert config["lr"] == 0.1 and config["steps"] == 4  # flags and --set together


def test_input_spec_flags_and_class_names_file(capsys, cli_models, tmp_path) -> None:
    names = tmp_path / "names.json"
    names.write_text(json.dumps({str(i): ["id", n] for i, n in enumerate("vwxyz")}))
    code, stdout, stderr = generate(
        capsys, "-m", str(cli_models["bare"]), "--input-shape", "3,16,16", "--mean", "0.5",
        "--std", "0.25", "--class-names", str(names), "-t", "z", *FAST,
        "--out", str(tmp_path), "--json",
    )  # fmt: skip
    assert code == 0, stderr
    proto = json.loads(stdout)["prototypes"][0]
    assert proto["target"]["classes"] == [4] and proto["target"]["class_names"] == ["z"]


def test_exported_program_with_bn_prior_and_diversity(capsys, cli_models, tmp_path) -> None:
    code, stdout, stderr = generate(
        capsys, "-m", str(cli_models["exported"]), "-t", "cherry", "--prototypes", "2",
        "--diversity", "0.5", "--bn-prior", "0.1", *FAST, "--out", str(tmp_path), "--json",
    )  # fmt: skip
    assert code == 0 and stderr == "", stderr
    files = [tmp_path / p["file"] for p in json.loads(stdout)["prototypes"]]
    assert [f.name for f in files] == ["2-cherry-0.png", "2-cherry-1.png"]
    assert files[0].read_bytes() != files[1].read_bytes()
    line = _one_line_error(
        capsys, "-m", str(cli_models["exported"]), "-t", "7", *FAST, "--out", str(tmp_path)
    )
    assert "class index 7 is out of range" in line


def _one_line_error(capsys, *args: str) -> str:
    code, stdout, stderr = generate(capsys, *args)
    assert code == 1
    assert stdout == ""
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("protolens: "), stderr
    assert "Traceback" not in stderr
    return lines[0]


def test_bad_inputs_are_one_line_errors(capsys, cli_models, tmp_path) -> None:
    fruit, out = str(cli_models["fruit"]), str(tmp_path / "o")
    cases = [
        (["-m", "resnet_nonexistent", "-t", "1"], "MODEL_NOT_FOUND: no model"),
        (
            ["-m", fruit, "-t", "cherri"],
            "UNKNOWN_CLASS: --target: unknown class 'cherri'; did you mean 'cherry' (2)?",
        ),
        (["-m", fruit, "-t", "9"], "class index 9 is out of range"),
        (
            ["-m", str(cli_models["notes"]), "-t", "1"],
            "INVALID_MODEL: " + str(cli_models["notes"]) + ": not a TorchScript file",
        ),
        (["-m", fruit, "--input-shape", "1,16,16", "-t", "1"], "expected input 1x16x16"),
        (["-m", fruit, "--class-names", str(tmp_path / "none.json"), "-t", "1"], "--class-names:"),
        (["-m", fruit, "-t", "1", "--steps", "200000"], "INVALID_ARGUMENT: --steps: must be"),
        (
            ["-m", fruit, "-t", "1", "--param", "wavelet"],
            "--param: must be 'fourier', 'pixel' or 'maco'",
        ),
        (["-m", fruit, "--hybrid", "1"], "--hybrid: '1': name two or more classes"),
        (["-m", fruit, "-t", "1", "--set", "margin_temperature=500"], "--set margin_temperature:"),
        (["-m", fruit, "-t", "1", "--set", "colour=red"], "--set colour: is not a generation"),
        (["-m", fruit, "-t", "1", "--set", "steps"], "--set: 'steps': expected FIELD=VALUE"),
        (["-m", fruit], "give at least one --target"),
        (["-m", fruit, "-t", "1", "--device", "tpu"], "--device:"),
    ]
    for args, expected in cases:
        line = _one_line_error(capsys, *FAST, *args, "--out", out)
        assert expected in line, line


def test_class_name_count_mismatch(capsys, cli_models, tmp_path) -> None:
    names = tmp_path / "three.json"
    names.write_text(json.dumps(["a", "b", "c"]))
    line = _one_line_error(
        capsys,
        "-m",
        str(cli_models["fruit"]),
        "--class-names",
        str(names),
        "-t",
        "1",
        *FAST,
        "--out",
        str(tmp_path),
    )
    assert "has 3 class names but the model outputs 5 logits" in line


def test_out_must_be_a_folder(capsys, cli_models, tmp_path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    line = _one_line_error(
        capsys, "-m", str(cli_models["fruit"]), "-t", "1", *FAST, "--out", str(blocker)
    )
    assert "--out:" in line and "not a folder" in line


@pytest.mark.parametrize("start", ["noise", "equidistant"])
def test_nan_during_optimisation(capsys, cli_models, tmp_path, start) -> None:
    line = _one_line_error(
        capsys,
        "-m",
        str(cli_models["nan"]),
        "-t",
        "1",
        "--start",
        start,
        *FAST,
        "--out",
        str(tmp_path),
    )
    assert "DIVERGED:" in line and "NaN" in line


def _run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run(
        [sys.executable, "-m", "protolens.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def test_real_process_json_and_error(cli_models, tmp_path) -> None:
    ok = _run_cli(
        "generate",
        "-m",
        str(cli_models["fruit"]),
        "-t",
        "date",
        *FAST,
        "--out",
        str(tmp_path),
        "--json",
    )
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["prototypes"][0]["target"]["class_names"] == ["date"]
    bad = _run_cli("generate", "-m", str(cli_models["notes"]), "-t", "1", "--out", str(tmp_path))
    assert bad.returncode == 1
    assert bad.stderr.strip().count("\n") == 0 and "Traceback" not in bad.stderr
    assert "not a TorchScript file" in bad.stderr


def test_compile_flag_makes_the_same_prototypes(capsys, cli_models, tmp_path) -> None:
    import warnings

    from torch._dynamo.utils import counters

    docs = []
    counters.clear()
    for flag in ((), ("--compile",)):
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)  # no silent fallback to eager
            code, stdout, stderr = generate(
                capsys, "-m", str(cli_models["exported"]), "-t", "1", "-t", "3", *FAST,
                *flag, "--out", str(tmp_path / str(len(flag))), "--json",
            )  # fmt: skip
        assert code == 0, stderr
        docs.append(json.loads(stdout))
    assert counters["stats"]["unique_graphs"] >= 1  # the second run really compiled
    for eager, compiled in zip(docs[0]["prototypes"], docs[1]["prototypes"], strict=True):
        assert compiled["target"] == eager["target"]
        assert abs(compiled["probability"] - eager["probability"]) < 1e-3


def test_any_number_of_channels_writes_a_float_tensor_and_a_preview(
    capsys, cli_models, tmp_path
) -> None:
    import torch
    from protolens_server.imageio import decode_tensor, png_provenance

    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(4, 6, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(6, 3),
    ).eval()
    path = tmp_path / "four.pt"
    torch.jit.script(net).save(str(path))
    path.with_suffix(".json").write_text(json.dumps({"channels": 4, "height": 16, "width": 16}))
    out = tmp_path / "out"
    code, stdout, stderr = generate(
        capsys, "-m", str(path), "-t", "2", *FAST, "--out", str(out), "--json",
        "--preview-channels", "3,1,0",
    )  # fmt: skip
    assert code == 0, stderr
    record = json.loads(stdout)["prototypes"][0]
    assert record["float_file"] == "2-class_2-0.safetensors"
    image, meta = decode_tensor((out / record["float_file"]).read_bytes())
    assert image.shape == (4, 16, 16) and image.dtype == torch.float32
    png = (out / record["file"]).read_bytes()
    preview = torch.tensor(list(Image.open(out / record["file"]).getdata())).T.reshape(3, 16, 16)
    assert (preview.float() / 255 - image[[3, 1, 0]]).abs().max() <= 0.5 / 255 + 1e-6
    for both in (meta, png_provenance(png)):
        assert both["model_digest"] == json.loads(stdout)["model"]["digest"]
        assert json.loads(both["target"]) == {"classes": [2], "kind": "prototype"}
        assert both["seed"] == str(record["seed"]) and json.loads(both["config"])["steps"] == 4
        assert both["engine_version"] == record["provenance"]["engine_version"]
    # a 3-channel model writes the tensor only with --float
    code, stdout, _ = generate(
        capsys, "-m", str(cli_models["fruit"]), "-t", "1", *FAST, "--out", str(tmp_path / "f"),
        "--json", "--float",
    )  # fmt: skip
    record = json.loads(stdout)["prototypes"][0]
    assert code == 0 and record["float_file"].endswith(".safetensors")
    code, stdout, _ = generate(
        capsys, "-m", str(cli_models["fruit"]), "-t", "1", *FAST, "--out", str(tmp_path / "g"),
        "--json",
    )  # fmt: skip
    assert json.loads(stdout)["prototypes"][0]["float_file"] is None


def test_a_generating_process_loads_neither_grpc_nor_torch_dynamo(cli_models, tmp_path) -> None:
    """What a cold ``protolens generate`` does not need, it does not import: the gRPC
    client (the SDK's clients load on first use) and ``torch._dynamo`` (which any
    ``torch.optim`` optimiser imports: the engine's equidistant start uses its own Adam)."""
    script = (
        "import sys\n"
        "from protolens.cli import main\n"
        "code = main(sys.argv[1:])\n"
        "print(code, 'grpc' in sys.modules, 'torch._dynamo' in sys.modules)\n"
    )
    args = ["generate", "--model", str(cli_models["fruit"]), "--target", "1", *FAST]
    done = subprocess.run(
        [sys.executable, "-c", script, *args, "--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "0 False False", done.stdout


def test_a_prototype_its_model_does_not_classify_as_its_target_is_warned(capsys, tmp_path) -> None:
    """Exit 0 with p = 0.000 and no word (bench/unusual_models.py, a [0,255] model fed
    [0,1]) was a meaningless result reported as success: now stderr says so."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 3)).eval()
    with torch.no_grad():
        net[1].weight[1].zero_()
        net[1].bias[1] = -100.0  # class 1 can never be the top class
    torch.jit.script(net).save(str(tmp_path / "m.pt"))
    shape = ["--input-shape", "3,8,8", "--mean", "0.5", "--std", "0.25"]
    args = ["-m", str(tmp_path / "m.pt"), *shape, "--max-steps", "8", "--lr", "0.1"]
    code, stdout, stderr = generate(capsys, *args, "-t", "1", "--out", str(tmp_path / "a"))
    assert code == 0 and "p=0.000" in stdout
    assert stderr.startswith("protolens: warning: 1-class_1-0.png: the model's top class is")
    assert "not the target (p=0.000) after 8 steps; check the input spec" in stderr
    code, _, stderr = generate(capsys, *args, "-t", "0", "-t", "2", "--out", str(tmp_path / "b"))
    assert code == 0 and stderr == ""  # both reachable: no warning


def test_a_multi_label_model_reports_each_label_s_own_probability(capsys, tmp_path) -> None:
    """Declared with --model-output (its logits look like a single-label model's): the
    records' probability is each label's own sigmoid, and the off-target warning says a
    label is not seen when its probability is below 0.5, not when another label, which
    may be present too, ranks first."""
    import math

    import torch
    from torch import nn

    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 3)).eval()
    with torch.no_grad():
        net[1].weight[1].zero_()
        net[1].bias[1] = -100.0  # label 1 is never present
        net[1].weight[2].zero_()
        net[1].bias[2] = 30.0  # label 2 always is: the top label of every image
    torch.jit.script(net).save(str(tmp_path / "m.pt"))
    shape = ["--input-shape", "3,8,8", "--mean", "0.5", "--std", "0.25"]
    args = ["-m", str(tmp_path / "m.pt"), *shape, "--max-steps", "32", "--lr", "0.1"]
    declared = [*args, "--model-output", "multi-label-logits", "-t", "0", "-t", "1"]
    code, stdout, stderr = generate(capsys, *declared, "--out", str(tmp_path / "a"), "--json")
    assert code == 0, stderr
    seen, unseen = json.loads(stdout)["prototypes"]
    for r in (seen, unseen):
        assert r["multi_label"] is True and "label_probability" not in r
        assert r["probability"] == pytest.approx(1 / (1 + math.exp(-r["logit"])), abs=1e-6)
        assert r["top5"][0]["index"] == 2 and r["top5"][0]["probability"] == 1.0
    assert len(seen["top5"]) == 3 and sum(t["probability"] for t in seen["top5"]) > 1.5
    assert seen["probability"] > 0.5 and unseen["probability"] < 1e-6
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr  # label 0 is seen although label 2 ranks first
    assert lines[0].startswith("protolens: warning: 1-class_1-0.png: the model gives its label")
    assert "p=0.000 (multi-label: below 0.5, it does not see the label" in lines[0]

    # the same file undeclared is single-label: a softmax, and label 0 never ranks first
    code, stdout, stderr = generate(
        capsys, *args, "-t", "0", "--out", str(tmp_path / "b"), "--json"
    )
    (single,) = json.loads(stdout)["prototypes"]
    assert code == 0 and single["multi_label"] is False and single["probability"] < 1e-6
    assert "the model's top class is 'class 2'" in stderr

    line = _one_line_error(capsys, *args, "-t", "0", "--model-output", "sigmoid", "--out", "x")
    assert line.startswith("protolens: INVALID_ARGUMENT: --model-output: must be")


def test_outside_a_terminal_it_says_what_it_is_doing_in_lines(capsys, cli_models, tmp_path) -> None:
    """In a CI log, under nohup or through a pipe there is no bar: a run of many minutes
    (20 min for the README's first generate on a busy 2-core VM) used to print nothing until
    its result. Now one line per phase and per tenth of the steps; the loading line comes
    with the next phase, so a bad input found while loading is still one line."""
    code = main(["generate", "-m", str(cli_models["fruit"]), "-t", "1", "--steps", "20",
                 "--lr", "0.05", "--out", str(tmp_path / "o")])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 0, err
    lines = err.splitlines()
    assert all(line.startswith(PROGRESS) for line in lines), err
    assert re.fullmatch(r"protolens generate: \S+fruit\.pt loaded in \d+\.\d s", lines[0])
    assert lines[1] == f"{PROGRESS}preparing: equidistant start (16 steps)"
    steps = [int(m[1]) for m in re.finditer(r"optimising: step (\d+)/20 p=", err)]
    assert steps[0] == 0 and steps[-1] == 20 and steps == sorted(set(steps)), err
    code = main(["generate", "-m", str(cli_models["fruit"]), "-t", "cherri", "--out",
                 str(tmp_path / "o")])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and err.startswith("protolens: UNKNOWN_CLASS"), err


def test_a_cpu_limit_caps_the_threads_it_runs_on(cli_models, tmp_path) -> None:
    """torch alone would start a thread per core it sees; in a real 1-CPU cgroup (root, as
    on CI) ``protolens generate`` runs on one, and says so in its JSON."""
    from cgroups import cpu_quota_cgroup, in_cgroup
    from protolens_server.cpu_budget import available_cpus

    argv = [sys.executable, "-m", "protolens.cli", "generate", "-m", str(cli_models["fruit"]),
            "-t", "1", *FAST, "--out", str(tmp_path / "out"), "--json"]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}  # torch's own count
    free = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env)
    assert free.returncode == 0, free.stderr
    assert json.loads(free.stdout)["torch_threads"] == available_cpus()
    if available_cpus() < 2:
        pytest.skip("needs two CPUs to cap at one")
    with cpu_quota_cgroup(1.0) as group:
        capped = subprocess.run(
            in_cgroup(group, argv), capture_output=True, text=True, timeout=120, env=env
        )
    assert capped.returncode == 0, capped.stderr
    assert json.loads(capped.stdout)["torch_threads"] == 1


def test_the_model_can_be_the_first_word(capsys, cli_models, tmp_path) -> None:
    # `protolens generate net.ts -t 1 -o out` is what people type after `protolens check
    # net.ts` or `protolens layers net.ts`; it was "unrecognized arguments: net.ts".
    model = str(cli_models["fruit"])
    code, stdout, stderr = generate(capsys, model, "-t", "1", *FAST, "--out", str(tmp_path / "a"))
    assert code == 0, stderr
    assert "1-banana-0.png  banana  p=" in stdout
    # the same prototype as with --model: one model reference, two spellings
    code, _, stderr = generate(capsys, "-m", model, "-t", "1", *FAST, "--out", str(tmp_path / "b"))
    assert code == 0, stderr
    first, second = (tmp_path / d / "1-banana-0.png" for d in ("a", "b"))
    assert first.read_bytes() == second.read_bytes()
    # given twice, the same model is fine; two different ones are an error naming both
    again = ["-m", model, "-t", "1", *FAST, "-o", str(tmp_path / "c")]
    code, _, stderr = generate(capsys, model, *again)
    assert code == 0, stderr
    message = _one_line_error(capsys, model, "-m", "other.ts", "-t", "1", "-o", str(tmp_path / "d"))
    assert "two models given" in message and "other.ts" in message and model in message
    assert not (tmp_path / "d").exists()  # refused before anything was written
