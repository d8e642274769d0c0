"""The service pairs a check's classes by name as ``run_check`` does (``checks/matching.py``):
a registered version whose labels file came out in another order is compared class with
class through the queue, and only ``same_class_names`` fails; a policy naming an unknown
way to pair classes is refused at start."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from checks_serving import serving
from checks_shortcut_models import CONFIG, SIZE
from protolens import AsyncClient
from protolens.errors import InvalidArgumentError
from protolens_server.checks.policy import DEFAULT_POLICY_YAML
from test_check_class_matching import REVERSED, some_logits

OPTIONS = {
    "steps": CONFIG.steps,
    "prototypes": CONFIG.prototypes,
    "config": {"lr": CONFIG.lr, "transforms": CONFIG.transforms},
    "policy_yaml": DEFAULT_POLICY_YAML,
}


@pytest.fixture(scope="module")
def reordered_store(shapes_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``shapes@1`` and ``shapes@2``: the same classifier with its classes (logits and
    labels) in reverse order, exported and registered as a retrain would be."""
    store = tmp_path_factory.mktemp("reordered-store")
    shutil.copytree(shapes_store / "shapes" / "1", store / "shapes" / "1")
    program = torch.export.load(str(store / "shapes" / "1" / "model.pt2"))
    reordered = torch.export.export(
        some_logits(program.module(), REVERSED),
        (torch.rand(2, 3, SIZE, SIZE),),
        dynamic_shapes=({0: torch.export.Dim("batch")},),
    )
    (store / "shapes" / "2").mkdir()
    torch.export.save(reordered, str(store / "shapes" / "2" / "model.pt2"))
    sidecar = json.loads((store / "shapes" / "1" / "model.json").read_text())
    sidecar["class_names"] = [sidecar["class_names"][j] for j in REVERSED]
    (store / "shapes" / "2" / "model.json").write_text(json.dumps(sidecar))
    return store


async def test_a_reordered_version_is_checked_class_with_class(redis_url, reordered_store):
    async with (
        serving(redis_url, reordered_store) as (address, _api, _worker),
        AsyncClient(address) as client,
    ):
        check = await client.start_check("shapes@2", baseline="previous", **OPTIONS)
        done = await client.wait_check(check, timeout=180)
        assert done.state == "SUCCEEDED", done.error
        assert list(done.failed_rules) == ["same_class_names"]
        doc = json.loads((await client.get_check_report(done)).json)
        assert doc["baseline"]["ref"] == "shapes@1"
        assert doc["class_match"]["by"] == "name"
        assert len(doc["class_match"]["moved"]) == 4
        for c in doc["classes"]:
            assert c["baseline_class"] == REVERSED[c["class"]]
            assert c["cross_scores"]["new_prototype_in_baseline_model"] > 0.5, c
            assert c["cross_scores"]["baseline_prototype_in_new_model"] > 0.5, c
        report = await client.get_check_report(done)
        assert "classes compared by name: 4 at another index" in report.html

        with pytest.raises(InvalidArgumentError, match="match_classes") as info:
            await client.start_check(
                "shapes@2",
                baseline="shapes@1",
                **{**OPTIONS, "policy_yaml": "match_classes: position\n"},
            )
        assert "must be one of auto, name, index" in str(info.value)


async def test_a_numbered_reference_set_is_refused_when_the_versions_classes_moved(
    redis_url, reordered_store, tmp_path
):
    """The service reads a registered set once per version, under that version's own
    classes: a numbered folder would be another class to each of ``shapes@2`` and its
    reordered baseline, so such a check is refused at start with what to rename (run_check
    refuses it too); named folders, or numbers in a check of a version against itself,
    are started."""
    from checks_shortcut_models import write_reference

    root = tmp_path / "references"
    write_reference(root / "named", per_class=3)
    (root / "numbered").mkdir()
    for i, name in enumerate(["disc", "bars", "cross", "ring"]):  # shapes@1's order
        shutil.copytree(root / "named" / name, root / "numbered" / str(i))
    async with (
        serving(redis_url, reordered_store, reference_root=root) as (address, _api, _worker),
        AsyncClient(address) as client,
    ):
        before, _ = await client.list_checks(page_size=100)
        with pytest.raises(InvalidArgumentError, match="numbers its class folders") as info:
            await client.start_check(
                "shapes@2", baseline="previous", reference_set="numbered", **OPTIONS
            )
        message = str(info.value)
        assert "reference_set" in message and "reference set 'numbered'" in message
        assert "folder 0: 'ring' in the model, 'disc' in the baseline" in message
        assert "(0 -> ring, 1 -> cross, 2 -> bars, 3 -> disc)" in message
        assert str(root) not in message  # the server's folders stay private
        after, _ = await client.list_checks(page_size=100)
        assert [c.name for c in after] == [c.name for c in before]  # nothing was started
        for model, baseline, refs in (
            ("shapes@2", "previous", "named"),
            ("shapes@1", "shapes@1", "numbered"),
        ):
            check = await client.start_check(
                model, baseline=baseline, reference_set=refs, **OPTIONS
            )
            assert check.state in ("RUNNING", "QUEUED"), (model, refs, check.state)
            await client.cancel_check(check)
