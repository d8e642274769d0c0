"""Multi-label models through the service (API server, worker and Redis all real): a
model registered with its logits declared ``"output": "multi-label-logits"`` and one
with a sigmoid in its forward are listed as multi-label; their prototypes' probability,
as the SDK, both CLI commands and the gallery report it, is the model's own sigmoid of
the label's logit (checked on the lossless image with the model file itself), and the
off-target rule is the label's probability below 0.5. A registration with a bad
declaration is listed UNUSABLE naming ``output``. The model is
``testkit.multilabel_net`` (boat and water co-occur)."""

from __future__ import annotations

import json
import math
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e_stack import run_cli, stack_settings
from protolens import Client
from protolens.errors import FailedPreconditionError
from protolens.types import Model
from protolens_server.api.stack import Stack
from protolens_server.api.testkit import MULTILABEL_SPEC, make_multilabel_model

pytestmark = pytest.mark.xdist_group("e2e")


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        folder = tmp_path_factory.mktemp("multilabel-store")
        make_multilabel_model(folder, name="scenes")  # logits, declared in its sidecar
        make_multilabel_model(folder, name="scenes_sigmoid", sigmoid=True)  # recognised
    finally:
        torch.set_num_threads(before)
    (folder / "mislabelled.pt").write_bytes((folder / "scenes.pt").read_bytes())
    bad = {**MULTILABEL_SPEC, "output": "sigmoid"}
    (folder / "mislabelled.json").write_text(json.dumps(bad))
    return folder


@pytest.fixture(scope="module")
def stack(
    _session_redis: str, store: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    settings = stack_settings(_session_redis, "e2eml", store)
    with Stack(settings, tmp_path_factory.mktemp("multilabel-stack"), workers=1) as running:
        yield running


def _ready(client: Client, name: str) -> Model:
    """The model once its inspection (a child process, on a busy machine) is done."""
    deadline = time.monotonic() + 120
    model = client.get_model(name)
    while model.state == "INSPECTING" and time.monotonic() < deadline:
        time.sleep(0.5)
        model = client.get_model(name)
    return model


def _own_probabilities(path: Path, float_tensor: bytes) -> list[float]:
    """The registered file's own forward on the prototype's lossless image, as each
    label's probability (its output for the sigmoid model, sigmoid of it otherwise)."""
    import torch
    from protolens_server.imageio import decode_tensor

    image, _ = decode_tensor(float_tensor)
    module = torch.jit.load(str(path))
    with torch.no_grad():
        out = module((image[None] - 0.5) / 0.25)[0]
    return (out if path.stem.endswith("sigmoid") else torch.sigmoid(out)).tolist()


@pytest.mark.parametrize("name", ["scenes", "scenes_sigmoid"])
def test_the_service_reports_each_label_s_own_probability(
    stack: Stack, store: Path, name: str
) -> None:
    with Client(stack.address, timeout=60) as client:
        model = _ready(client, name)
        assert model.usable and model.multi_label, model.unusable_reason
        job = client.create_prototype_job(name, ["water", "boat", "tree"], seed=3)
        job = client.wait(job, timeout=300)
        assert job.succeeded, job.error
        protos = [client.get_prototype(job, s.index, include_float=True) for s in job.prototypes]
    for s, proto in zip(job.prototypes, protos, strict=True):
        (label,) = s.target.classes
        assert s.multi_label and proto.summary.multi_label
        assert s.probability == pytest.approx(1 / (1 + math.exp(-s.logit)), abs=1e-6)
        own = _own_probabilities(store / f"{name}.pt", proto.float_tensor)
        assert s.probability == pytest.approx(own[label], abs=1e-4)
        assert s.probability >= 0.9 and not s.off_target
        for c in s.top5:
            assert c.probability == pytest.approx(own[c.index], abs=1e-4)
        assert proto.record()["multi_label"] is True
    assert job.warnings == []

    code, out, err = run_cli("get", job.id, "--address", stack.address)
    assert code == 0 and err == ""
    assert out.count("(multi-label: the label's own probability)") == 3
    code, out, _ = run_cli("get", job.id, "--address", stack.address, "--json")
    assert code == 0 and all(p["multi_label"] for p in json.loads(out)["prototypes"])
    code, out, _ = run_cli("models", "--address", stack.address)
    assert code == 0 and f"{name}\t4 labels, multi-label\t" in out

    web = stack.start_web()
    page = urllib.request.urlopen(f"{web}jobs/{job.id}/prototypes/0", timeout=30).read().decode()
    assert "<dt>label probability</dt>" in page and "A multi-label model" in page


def test_a_label_the_model_does_not_see_is_off_target_by_its_own_probability(
    stack: Stack,
) -> None:
    """An antitype run as far as it goes drives water's probability to ~0; a prototype
    of fixed few steps is the caller's choice. Neither warns; the rule itself (p < 0.5,
    not "ranks first") is what the SDK applies to a class prototype."""
    from protolens.types import ClassProbability, PrototypeSummary, ResolvedTarget, Target

    target = ResolvedTarget(classes=(1,), class_names=("water",), kind="prototype")
    ranked_second = PrototypeSummary(
        "p", 0, target, 0, 0.8, 1.4, (ClassProbability(0, "boat", 0.9),), 64, 0, False,
        stop_reason="converged", multi_label=True,
    )  # fmt: skip
    assert not ranked_second.off_target  # a single-label reading would call this off target
    unseen = PrototypeSummary(
        "p", 0, target, 0, 0.3, -0.8, (ClassProbability(0, "boat", 0.9),), 64, 0, False,
        stop_reason="converged", multi_label=True,
    )  # fmt: skip
    assert unseen.off_target
    with Client(stack.address, timeout=60) as client:
        job = client.create_prototype_job("scenes", [Target(("water",), "antitype")], seed=1)
        job = client.wait(job, timeout=300)
    assert job.succeeded and job.prototypes[0].probability < 0.1 and job.warnings == []


def test_a_bad_declaration_is_listed_unusable_naming_the_field(stack: Stack) -> None:
    with Client(stack.address, timeout=60) as client:
        model = _ready(client, "mislabelled")
        assert model.state == "UNUSABLE"
        assert "mislabelled.json: output: must be 'multi-label-logits'" in model.unusable_reason
        with pytest.raises(FailedPreconditionError, match="output: must be"):
            client.create_prototype_job("mislabelled", ["water"])
