"""A new user's first hour with the CLI: help that explains, addresses that mean what they
say, one-line hints when the service is not there, a busy port named, one set of class
names, and a progress bar whose rate and last state are right."""

from __future__ import annotations

import argparse
import http.server
import re
import socket
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from protolens._cli.progress import StepRate, describe
from protolens.cli import build_parser
from protolens.cli import main as cli_main
from protolens.client import service_target
from protolens.types import Progress, WatchEvent

ROOT = Path(__file__).resolve().parents[2]


def _subparsers(
    parser: argparse.ArgumentParser, prefix: str = ""
) -> dict[str, argparse.ArgumentParser]:
    out = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                out[f"{prefix}{name}"] = child
                out.update(_subparsers(child, f"{prefix}{name} "))
    return out


def test_every_command_says_what_it_does_and_every_option_has_help() -> None:
    commands = _subparsers(build_parser())
    assert {"generate", "check", "serve", "worker", "up", "web", "demo", "submit", "watch",
            "get", "cancel", "models", "admin"} <= set(commands)  # fmt: skip
    for name, parser in commands.items():
        assert parser.description and len(parser.description) > 30, name
        text = parser.format_help()
        assert "``" not in text, f"{name}: raw docstring markup in --help"
        for action in parser._actions:
            if action.option_strings and action.dest not in ("help", "worker_args"):
                assert action.help, f"{name} {action.option_strings}: no help"
        assert not re.search(r"\b(CFG|GRPC|WEB)_[A-Z_]+", text), f"{name}: a raw metavar"


def test_generation_options_show_their_defaults_and_readable_metavars() -> None:
    text = _subparsers(build_parser())["generate"].format_help()
    for option in ("--steps N", "--lr LR", "--transforms PRESET", "--seed N"):
        assert option in text, option
    flat = " ".join(text.split())
    for default in ("(default: 256)", "(default: margin)", "(default: medium)", "(default: 0)"):
        assert default in flat, default


def test_steps_help_of_service_commands_states_the_engines_default() -> None:
    """submit and demo cannot ask the engine (the client has no torch), so their --steps
    help states its default in words; it said "64" long after the engine went to "until
    converged, at most 256"."""
    from protolens_server.engine.types import GenerationConfig

    default = GenerationConfig()
    assert default.steps == 0
    commands = _subparsers(build_parser())
    for name in ("submit", "demo"):
        flat = " ".join(commands[name].format_help().split())
        assert "until each prototype converges" in flat, name
        assert f"at most {default.max_steps} steps" in flat, name
        assert "64" not in flat, name


def test_top_level_help_does_not_import_torch() -> None:
    code = "import sys; from protolens.cli import build_parser; build_parser().format_help(); "
    code += "print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False", out.stderr


@pytest.mark.parametrize(
    ("given", "target"),
    [
        ("localhost", "localhost:50051"),
        ("10.0.0.7", "10.0.0.7:50051"),
        ("api.example:443", "api.example:443"),
        ("[::1]", "[::1]:50051"),
        ("::1", "[::1]:50051"),
        ("[::1]:6000", "[::1]:6000"),
        ("dns:///api.example:50051", "dns:///api.example:50051"),
        ("unix:/tmp/protolens.sock", "unix:/tmp/protolens.sock"),
    ],
)
def test_an_address_without_a_port_means_the_service_port(given: str, target: str) -> None:
    assert service_target(given) == target


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_no_server_is_one_line_that_says_run_protolens_up(capsys) -> None:
    port = _free_port()
    code = cli_main(["models", "--address", f"127.0.0.1:{port}", "--timeout", "5"])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1, err
    assert err.startswith(f"protolens: UNAVAILABLE: no protolens API at 127.0.0.1:{port}")
    assert "connection refused" in err and "`protolens up`" in err


class _QuietHandler(http.server.BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def test_a_port_that_is_not_grpc_is_one_line_that_says_so(capsys) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _QuietHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        code = cli_main(["models", "--address", f"127.0.0.1:{server.server_port}"])
    finally:
        server.shutdown()
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1, err
    assert "not a gRPC server" in err and "the protolens API's port?" in err


def test_up_on_a_busy_port_is_one_line_naming_the_option(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        cmd = [sys.executable, "-m", "protolens.cli", "up", "--port", str(port),
               "--data-dir", str(tmp_path)]  # fmt: skip
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and done.stdout == ""
    expected = f"protolens: PORT_IN_USE: the API cannot listen on 127.0.0.1:{port}"
    assert done.stderr.startswith(expected), done.stderr
    assert "--port" in done.stderr and done.stderr.count("\n") == 1, done.stderr
    assert not any(tmp_path.iterdir())  # nothing was started


BAD_CONFIGS = [
    # (PROTOLENS_CONFIG's content, or None: the path names no file; what the line says)
    (None, "PROTOLENS_CONFIG: cannot read"),
    (b"- redis_url\n- grpc_port\n", "must be a YAML mapping of setting names to values"),
    (b"redis_url: [unclosed\n", "is not valid YAML"),
    (b"\xff\xfe\x00 not text", "is not UTF-8 text"),
    (b"max_bach: 4\n", "max_bach: is not a setting"),
    (b"grpc_port: fifty\n", "grpc_port: Input should be a valid integer"),
]


@pytest.mark.parametrize(("content", "said"), BAD_CONFIGS, ids=lambda v: str(v)[:20])
@pytest.mark.parametrize("command", ["serve", "worker"])
def test_a_bad_settings_file_is_one_line_naming_it(
    command: str, content: bytes | None, said: str, tmp_path: Path, monkeypatch, capsys
) -> None:
    """A settings file (PROTOLENS_CONFIG) that is missing, not a mapping, not YAML, not
    text, or holds a bad value: one line naming the file and what is wrong, exit 1 (the
    worker's own 2). They were tracebacks (FileNotFoundError, AttributeError: 'list'
    object has no attribute 'items', ScannerError, UnicodeDecodeError, pydantic's
    multi-line ValidationError)."""
    path = tmp_path / "protolens.yaml"
    if content is not None:
        path.write_bytes(content)
    monkeypatch.setenv("PROTOLENS_CONFIG", str(path))
    monkeypatch.setenv("PROTOLENS_REDIS_URL", "redis://127.0.0.1:1/0")  # never reached
    code = cli_main([command])
    err = capsys.readouterr().err
    assert code in (1, 2) and err.count("\n") == 1, err
    assert said in err and "Traceback" not in err, err
    if content is not None and b"grpc_port" in content:
        assert str(path) in err  # where the bad value came from


def test_a_bad_setting_in_the_environment_names_its_variable(monkeypatch, capsys) -> None:
    monkeypatch.setenv("PROTOLENS_MAX_BATCH", "-1")
    monkeypatch.setenv("PROTOLENS_REDIS_URL", "redis://127.0.0.1:1/0")
    code = cli_main(["serve"])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1, err
    assert err.startswith("protolens: INVALID_ARGUMENT: max_batch: "), err
    assert "got '-1' from PROTOLENS_MAX_BATCH" in err, err


def test_the_demo_classes_have_one_name_everywhere() -> None:
    from protolens_server.cli.service import DEMO_CLASSES, DEMO_CLASSES_WITH_REFERENCES
    from protolens_server.models.builtin import imagenet_classes

    names = imagenet_classes().names
    help_text = " ".join(_subparsers(build_parser())["demo"].format_help().split())
    readme = " ".join((ROOT / "README.md").read_text().split())
    for index in (*DEMO_CLASSES, *DEMO_CLASSES_WITH_REFERENCES):
        named = f"{index} {names[int(index)]}"  # e.g. "285 Egyptian Mau"
        assert named in help_text, named
        assert named in readme, named
    for wrong in ("Egyptian cat", "281 tabby,", "948 Granny Smith,"):
        assert wrong not in help_text and wrong not in readme, wrong


def _event(state: str, step: int, phase: str, at: datetime | None) -> WatchEvent:
    return WatchEvent(state, Progress(step, 64, 0.5, step / 64, phase, "", at), "", "c")


def test_the_rate_comes_from_the_workers_times_not_from_when_events_arrive() -> None:
    """Replaying a finished job delivers every event at once; the rate must not notice."""
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    rate = StepRate()
    rate.add(_event("RUNNING", 0, "PREPARING", t0).progress)
    for step in (0, 16, 32, 48, 64):  # the worker did 16 steps every 2 s: 8 step/s
        rate.add(_event("RUNNING", step, "OPTIMISING", t0 + timedelta(seconds=step / 8)).progress)
    rate.add(_event("SUCCEEDED", 64, "", t0 + timedelta(seconds=30)).progress)  # scoring after
    assert rate.value == pytest.approx(8.0)
    line = describe(_event("SUCCEEDED", 64, "", t0), rate.value)
    assert line.startswith("SUCCEEDED") and "8.0 step/s" in line


def test_the_last_line_says_how_the_job_ended() -> None:
    cancelled = WatchEvent("CANCELLED", Progress(24, 64, 0.4), "cancelled at step 24", "c")
    assert describe(cancelled, None) == "CANCELLED p=0.400: cancelled at step 24"
    loading = WatchEvent(
        "RUNNING", Progress(0, 64, 0.0, 0.0, "LOADING_MODEL", "loading model m onto cpu"), "", "c"
    )
    assert describe(loading, None) == "RUNNING loading model p=0.000: loading model m onto cpu"


def test_what_the_readme_commands_write_is_git_ignored() -> None:
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    written = ("protolens-demo/x.png", "protos/281-tabby_cat-0.png", "out/job.json",
               "iso/x.png", "report.html")  # fmt: skip
    for path in written:
        done = subprocess.run(["git", "-C", str(ROOT), "check-ignore", "-q", path], timeout=30)
        assert done.returncode == 0, f"{path} is not git-ignored"
