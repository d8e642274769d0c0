"""``protolens check`` in process (exit codes, report files, JSON) and as a real process
(Ctrl-C cancels between steps: exit 130, nothing half-written in the cache)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from protolens.cli import main

POLICY_YAML = """
min_confidence: 0.5
max_drift: 0.6
min_cross_confidence: 0.5
forbidden_entanglements:
  - [disc, ring]
"""
FAST = ["--steps", "32", "--prototypes", "2", "--lr", "0.1", "--transforms", "small"]  # = CONFIG


def _args(store: Path, cache: Path, *extra: str) -> list[str]:
    return ["check", *extra, "--model-store", str(store), "--cache-dir", str(cache), *FAST]


def test_cli_exit_codes_and_reports(shapes_store, tmp_path, capsys) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY_YAML)
    html, doc_path = tmp_path / "out" / "report.html", tmp_path / "out" / "report.json"
    reports = ["--report", str(html), "--report-json", str(doc_path)]
    cache = tmp_path / "cache"
    code = main(
        [
            *_args(
                shapes_store, cache, "shapes@2", "--baseline", "shapes@1", "--policy", str(policy)
            ),
            *reports,
        ]
    )
    out = capsys.readouterr().out
    assert code == 1, out
    assert out.startswith("FAIL shapes@2 vs shapes@1") and "bars" in out
    assert html.read_text().startswith("<!DOCTYPE html>")
    doc = json.loads(doc_path.read_text())
    assert not doc["passed"] and "bars" in doc["flagged_classes"]

    # the shipped policy by name (same prototypes: all from the cache)
    code = main(
        [
            *_args(
                shapes_store, cache, "shapes@2", "--baseline", "shapes@1", "--policy", "default"
            ),
            "--json",
        ]
    )
    doc = json.loads(capsys.readouterr().out)
    assert code == 1 and doc["generation"]["generated"] == 0
    rules = {r["rule"]: r for r in doc["rules"]}
    assert set(rules) == {
        "min_confidence",
        "max_drift_z",
        "min_cross_confidence",
        "same_class_names",
    }
    assert rules["same_class_names"]["status"] == "pass"  # the fine-tune kept its labels
    assert rules["min_cross_confidence"]["status"] == "fail"  # below chance, 1/4
    assert "bars" in rules["min_cross_confidence"]["classes"]

    code = main(
        [
            *_args(
                shapes_store, cache, "shapes@3", "--baseline", "shapes@1", "--policy", str(policy)
            ),
            "--json",
            "--classes",
            "disc,bars",
            "cross",
            "ring",
        ]
    )
    doc = json.loads(capsys.readouterr().out)
    assert code == 0 and doc["passed"]
    assert doc["generation"]["generated"] == 0  # shapes@3 = shapes@1's file: all cached

    # --baseline previous: shapes@3's predecessor is shapes@2 (a different model: generated)
    code = main([*_args(shapes_store, cache, "shapes@2", "--baseline", "previous"), "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert doc["baseline"]["ref"] == "shapes@1" and doc["generation"]["generated"] == 0
    assert main(_args(shapes_store, cache, "shapes@1", "--baseline", "previous")) == 2
    assert "first version" in capsys.readouterr().err

    assert main(_args(shapes_store, tmp_path / "cache", "shapes@9")) == 2
    assert "MODEL_NOT_FOUND" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("max_drfit: 0.2\n")
    assert main(_args(shapes_store, tmp_path / "cache", "shapes@1", "--policy", str(bad))) == 2
    assert "max_drfit" in capsys.readouterr().err


def test_ctrl_c_cancels_between_steps(shapes_store, tmp_path) -> None:
    cache = tmp_path / "cache"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "protolens.cli", *_args(shapes_store, cache, "shapes@1")]
    cmd[cmd.index("--steps") + 1] = "100000"
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = proc.stderr.readline()  # the first progress line: inside the optimisation
        assert first.startswith("protolens check: generating shapes@1"), first
        time.sleep(0.5)
        started = time.monotonic()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        stopped_in = time.monotonic() - started
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "cancelled" in err
    assert stopped_in < 10
    entries = [p for p in cache.glob("*") if not p.name.startswith(".")] if cache.exists() else []
    assert entries == [] and not list(cache.glob(".tmp-*"))


@pytest.mark.parametrize(
    ("option", "field", "default", "changed"),
    [
        (["--param", "maco"], "parameterisation", "fourier", "maco"),
        (["--set", "margin_temperature=3"], "margin_temperature", 1.0, 3.0),
    ],
)
def test_a_generation_option_reaches_the_config_and_keys_the_cache(
    shapes_store, tmp_path, capsys, option, field, default, changed
):
    cache = tmp_path / "cache"
    args = [*_args(shapes_store, cache, "shapes@2", "--classes", "disc"), "--json"]
    main(args)
    plain = json.loads(capsys.readouterr().out)
    main([*args, *option])
    other = json.loads(capsys.readouterr().out)
    assert plain["config"][field] == default
    assert other["config"][field] == changed
    assert other["generation"]["generated"] > 0  # not the plain prototypes from the cache


def test_set_names_a_bad_value(shapes_store, tmp_path, capsys):
    args = [*_args(shapes_store, tmp_path / "cache", "shapes@2", "--classes", "disc"), "--json"]
    assert main([*args, "--set", "margin_temperature=x"]) == 2
    assert "config.margin_temperature: 'x' is not a number" in capsys.readouterr().err


def test_a_version_without_its_store_is_named_at_once(shapes_store, tmp_path) -> None:
    """The README's `protolens check mymodel@2 --baseline mymodel@1` without --model-store
    was MODEL_NOT_FOUND ('not a built-in and no such file') after loading torch (15 s on a
    busy VM); now one line naming --model-store and the folder, before torch is imported."""
    code = (
        "import sys; from protolens.cli import main; "
        "code = main(['check', 'shapes@2', '--baseline', 'shapes@1', '--policy', 'default']); "
        "print('torch' in sys.modules, code)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert done.stdout.split() == ["False", "2"], done.stdout + done.stderr
    assert done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("protolens check: INVALID_ARGUMENT: --model-store: shapes@2")
    assert "shapes/2/" in done.stderr
    # with the store it is found (a version the store lacks is still MODEL_NOT_FOUND)
    args = ["check", "shapes@9", "--model-store", str(shapes_store)]
    done = subprocess.run(
        [sys.executable, "-m", "protolens.cli", *args], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2 and "MODEL_NOT_FOUND" in done.stderr, done.stderr
