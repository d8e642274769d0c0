"""A job that succeeds but whose prototype its model does not call its target says so.

A model registered with the wrong input spec (bench/unusual_models.py: a [0,255] model
fed [0,1]) gives p = 0.000 and, before, a SUCCEEDED job with no word. The SDK's
``Job.warnings`` and the CLI (stderr; ``warnings`` in ``--json``) now name it, by the
same rule as ``protolens generate`` (``protolens.files.off_target``). Real API server,
worker and Redis."""

from __future__ import annotations

import html
import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e_stack import run_cli, stack_settings
from protolens import Client
from protolens_server.api.stack import Stack

pytestmark = pytest.mark.xdist_group("e2e")


def _unreachable_class_model(path: Path) -> None:
    """Three classes; class 1 can never be the top class (a bias of -100)."""
    import torch

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 3)).eval()
    with torch.no_grad():
        net[1].weight[1].zero_()
        net[1].bias[1] = -100.0
    torch.jit.script(net).save(str(path))
    spec = {"channels": 3, "height": 8, "width": 8, "mean": 0.5, "std": 0.25,
            "class_names": ["a", "b", "c"]}  # fmt: skip
    path.with_suffix(".json").write_text(json.dumps(spec))


@pytest.fixture(scope="module")
def stack(_session_redis: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    store = tmp_path_factory.mktemp("offtarget-store")
    _unreachable_class_model(store / "stuck.pt")
    settings = stack_settings(_session_redis, "e2eoff", store)
    with Stack(settings, tmp_path_factory.mktemp("offtarget-stack"), workers=1) as running:
        yield running


def test_a_prototype_its_model_does_not_rank_first_is_a_warning(stack: Stack) -> None:
    config = {"max_steps": 8, "lr": 0.1}
    with Client(stack.address, timeout=30) as client:
        job = client.create_prototype_job("stuck", [1, 2], config=config, seed=1)
        job = client.wait(job, timeout=120)
    assert job.succeeded
    stuck, fine = job.prototypes
    assert stuck.probability < 0.01 and stuck.top5[0].index != 1 and stuck.off_target
    assert not fine.off_target and fine.top5[0].index == 2
    assert len(job.warnings) == 1
    assert job.warnings[0].startswith(f"{stuck.name}: the model's top class is")
    assert "not the target (p=0.000) after" in job.warnings[0]
    assert "check the input spec" in job.warnings[0]

    address = ("--address", stack.address)
    code, out, err = run_cli("get", job.id, *address)
    assert code == 0 and f"{stuck.name} b p=0.000" in out
    assert err.startswith("protolens: warning: ") and err.count("\n") == 1
    code, out, err = run_cli("get", job.id, *address, "--json")
    assert code == 0 and json.loads(out)["warnings"] == job.warnings

    # the gallery's job page shows it too
    page = urllib.request.urlopen(f"{stack.start_web()}jobs/{job.id}", timeout=30).read().decode()
    assert page.count('<p class="notice warn" role="status">') == 1
    assert job.warnings[0] in html.unescape(page)

    # fixed steps are the caller's choice: no warning, as for protolens generate
    code, out, err = run_cli(
        "submit", *address, "--model", "stuck", "--target", "1", "--steps", "4",
        "--config", "lr=0.1", "--wait", "--json",
    )  # fmt: skip
    assert code == 0 and json.loads(out)["state"] == "SUCCEEDED"
    assert json.loads(out)["warnings"] == [] and err == ""
