"""A retrain rarely keeps its label list byte for byte: its labels come out in another
order, a class is added or dropped. A check pairs each class with its namesake in the
baseline when both versions carry names (``checks/matching.py``), so such a version is
compared class with class, and ``same_class_names`` alone says that indices moved or went.

Before, a version whose classes were the baseline's in another order (the same classifier,
its labels reordered with its logits) was compared index by index, so every class was
compared with another class's prototypes and failed ``min_cross_confidence``; a version
with a class more or fewer could not be checked at all."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from checks_shortcut_models import CONFIG, SIZE
from protolens_server.checks import run_check
from protolens_server.checks.matching import (
    ClassMatch,
    describe,
    match_classes,
    refuse_numbered_folders,
)
from protolens_server.checks.policy import DEFAULT_POLICY_YAML, Policy
from protolens_server.checks.report import render_html
from protolens_server.errors import InvalidArgument, ReferenceSetError
from protolens_server.models.handle import ModelHandle, generated_class_names
from protolens_server.scores.references import ReferenceSet
from torch import nn

REVERSED = (3, 2, 1, 0)  # the model's class i is the baseline's class REVERSED[i]
CHECKED = ["disc", "bars", "cross", "ring"]


def some_logits(net: object, columns: tuple[int, ...]) -> nn.Module:
    """``net``'s logits ``columns``, in that order: the same classifier with its classes
    reordered (a permutation) or some of them dropped."""

    class Columns(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = net
            self.register_buffer("index", torch.tensor(columns))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net(x).index_select(1, self.index)

    wrapper = Columns()
    wrapper.training = False  # not .eval(): an exported program's module refuses train()
    return wrapper


def version(clean: ModelHandle, name: str, columns: tuple[int, ...]) -> ModelHandle:
    return dataclasses.replace(
        clean,
        name=name,
        module=some_logits(clean.module, columns),
        class_names=tuple(clean.class_names[j] for j in columns),
        class_aliases=(),
        digest=f"{name}-{'-'.join(map(str, columns))}-{clean.digest}",
    )


def default_policy(**changes: object) -> Policy:
    import yaml

    return Policy.from_dict({**yaml.safe_load(DEFAULT_POLICY_YAML), **changes}, source="test")


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("check-cache")


@pytest.fixture(scope="module")
def clean(catalog) -> ModelHandle:
    return catalog.load("shapes@1")


def test_a_version_with_its_labels_reordered_is_compared_class_with_class(clean, cache) -> None:
    reordered = version(clean, "shapes-reordered", REVERSED)
    images = torch.rand(3, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    assert torch.equal(reordered.module(images), clean.module(images)[:, list(REVERSED)])

    result = run_check(
        reordered, baseline=clean, config=CONFIG, policy=default_policy(), cache_dir=cache
    )
    doc = result.to_dict()
    assert doc["failed_rules"] == ["same_class_names"], doc["rules"]
    (rule,) = [r for r in doc["rules"] if r["rule"] == "same_class_names"]
    assert "the same names in another order" in rule["message"]
    assert "compared each class with its namesake" in rule["message"]
    match = doc["class_match"]
    assert match["by"] == "name" and match["paired"] == 4
    assert {(m["class"], m["baseline_class"]) for m in match["moved"]} == {
        (i, j) for i, j in enumerate(REVERSED)
    }
    for c in doc["classes"]:
        assert c["baseline_class"] == REVERSED[c["class"]]
        # each class against its own kind: both ways well above chance
        assert c["cross_scores"]["new_prototype_in_baseline_model"] > 0.5, c
        assert c["cross_scores"]["baseline_prototype_in_new_model"] > 0.5, c
        assert c["flags"] == ["policy:same_class_names"], c
        # the entanglement graphs speak of the model's indices on both sides
        for edge in c["entanglement"]["baseline"]:
            assert edge["source"] == c["class"]
    assert "<h3>ring (0) · baseline (3)" in render_html(result)
    line = describe(match)
    assert line.startswith("classes compared by name: 4 at another index (ring 3 -> 0, ")

    # paired by index (the behaviour before), the same prototypes compare across classes
    by_index = run_check(
        reordered,
        baseline=clean,
        config=CONFIG,
        policy=default_policy(match_classes="index"),
        cache_dir=cache,
    ).to_dict()
    assert by_index["class_match"]["by"] == "index" and not by_index["class_match"]["moved"]
    assert "min_cross_confidence" in by_index["failed_rules"]


def test_a_class_added_is_checked_alone_and_a_class_dropped_fails(clean, cache) -> None:
    three = version(clean, "shapes-three", (0, 1, 2))  # without ring
    grown_result = run_check(
        clean, baseline=three, config=CONFIG, policy=default_policy(), cache_dir=cache
    )
    grown = grown_result.to_dict()
    assert grown["class_match"]["added"] == [{"class": 3, "name": "ring"}]
    assert not grown["class_match"]["moved"] and not grown["class_match"]["removed"]
    (rule,) = [r for r in grown["rules"] if r["rule"] == "same_class_names"]
    assert rule["status"] == "pass"
    assert rule["message"].endswith("1 class added after them: 3 'ring'")
    ring = next(c for c in grown["classes"] if c["name"] == "ring")
    assert ring["baseline"] is None and ring["baseline_class"] is None
    assert ring["drift"] is None and ring["cross_scores"]["new_prototype_in_baseline_model"] is None
    others = [c for c in grown["classes"] if c["name"] != "ring"]
    assert all(c["baseline_class"] == c["class"] and c["drift"] is not None for c in others)

    shrunk = run_check(
        three, baseline=clean, config=CONFIG, policy=default_policy(), cache_dir=cache
    ).to_dict()
    assert "same_class_names" in shrunk["failed_rules"]
    (rule,) = [r for r in shrunk["rules"] if r["rule"] == "same_class_names"]
    assert "the model has 3 classes, the baseline 4: indices 3 'ring' are gone" in rule["message"]
    assert shrunk["class_match"]["removed"] == [{"class": 3, "name": "ring"}]
    assert [c["name"] for c in shrunk["classes"]] == CHECKED[:3]
    assert describe(shrunk["class_match"]) == "classes compared by name: 1 removed (ring)"
    html = render_html(grown_result)
    assert "<h3>ring (3) · new class</h3>" in html


def test_versions_that_cannot_be_paired_are_refused_with_what_to_do(clean) -> None:
    three = version(clean, "shapes-three", (0, 1, 2))
    unnamed = dataclasses.replace(three, class_names=generated_class_names(3))
    with pytest.raises(InvalidArgument, match="give both their class names") as info:
        match_classes(unnamed, clean)
    assert info.value.field == "baseline"
    with pytest.raises(InvalidArgument, match="match_classes: name to pair"):
        match_classes(three, clean, "index")
    with pytest.raises(InvalidArgument, match="the model has no class names of its own"):
        match_classes(unnamed, clean, "name")
    strangers = dataclasses.replace(clean, class_names=("a", "b", "c", "d"))
    with pytest.raises(InvalidArgument, match="shares no class name with the model"):
        match_classes(strangers, clean)
    # without names on one side, auto pairs by index, as before
    same_count = dataclasses.replace(clean, class_names=generated_class_names(4))
    assert match_classes(same_count, clean) == ClassMatch.identity(4)
    with pytest.raises(InvalidArgument, match="match_classes") as bad:
        Policy.from_dict({"match_classes": "position"}, source="p.yaml")
    assert bad.value.field == "p.yaml.match_classes"


def test_a_repeated_name_pairs_in_order_and_rows_follow_their_classes(clean) -> None:
    cranes = dataclasses.replace(clean, class_names=("crane", "bars", "crane", "ring"))
    moved = dataclasses.replace(clean, class_names=("bars", "crane", "ring", "crane", "hat"))
    match = match_classes(moved, cranes)
    assert dict(match.baseline_of) == {0: 1, 1: 0, 2: 3, 3: 2}
    assert match.added == (4,) and match.removed == ()
    rows = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    assert match.to_model_columns(rows).tolist() == [[2.0, 1.0, 4.0, 3.0, 0.0]]
    assert match.to_model({0: "crane#1", 3: "ring"}) == {1: "crane#1", 2: "ring"}
    assert match.baseline_indices([4, 3, 0]) == [2, 1]


def test_a_reference_set_is_read_under_the_baseline_s_indices(tmp_path) -> None:
    files = []
    for i in range(2):
        path = tmp_path / f"{i}.png"
        path.write_bytes(b"x")
        files.append((path, i))
    refs = ReferenceSet.from_pairs(files, ("disc", "bars"))
    moved = refs.reindexed({0: 1, 1: 0})
    assert [(im.relative, im.class_index) for im in moved.images] == [
        (files[0][0].as_posix(), 1),
        (files[1][0].as_posix(), 0),
    ]
    assert [im.class_index for im in refs.reindexed({1: 0}).images] == [0]


def test_the_baseline_is_scored_against_its_own_classes_references(clean, cache, tmp_path) -> None:
    """A reference folder names the model's classes; the baseline's prototypes of a class
    are scored against that class's images under the baseline's own index, so they score
    as they do in a check of the baseline against itself."""
    from checks_shortcut_models import write_reference

    refs = write_reference(tmp_path / "refs", per_class=4)
    reordered = version(clean, "shapes-reordered", REVERSED)
    policy = default_policy()
    moved = run_check(
        reordered, baseline=clean, config=CONFIG, policy=policy, cache_dir=cache, reference=refs
    ).to_dict()
    itself = run_check(
        clean, baseline=clean, config=CONFIG, policy=policy, cache_dir=cache, reference=refs
    ).to_dict()
    own = {c["class"]: c["new"]["path_similarity"] for c in itself["classes"]}
    for c in moved["classes"]:
        assert c["baseline"]["path_similarity"] is not None
        assert c["baseline"]["path_similarity"] == pytest.approx(own[c["baseline_class"]]), c


def test_numbered_class_folders_that_mean_another_class_per_version_are_refused() -> None:
    """Folder ``0`` is the model's class 0 to one version and the baseline's class 0 to the
    other: when classes moved, a numbered folder would score the two versions' prototypes
    of one class against different images, so it is refused, saying what to rename."""
    model = [CHECKED[j] for j in REVERSED]  # ring, cross, bars, disc
    moved = ClassMatch("name", {0: 3, 1: 2, 2: 1, 3: 0}, 4, 4)
    with pytest.raises(ReferenceSetError) as info:
        refuse_numbered_folders(
            ["0", "1", "2", "3"], moved, model, CHECKED, where="reference set 'refs'", field="f"
        )
    assert info.value.field == "f"
    message = info.value.message
    assert message.startswith("f: reference set 'refs' numbers its class folders")
    assert "folder 0: 'ring' in the model, 'disc' in the baseline" in message
    assert "(0 -> ring, 1 -> cross, 2 -> bars, 3 -> disc)" in message
    # named folders are read by name in each version; unmoved numbers mean one class
    refuse_numbered_folders(model, moved, model, CHECKED, where="w", field="f")
    partly = ClassMatch("name", {0: 1, 1: 0, 2: 2, 3: 3}, 4, 4)
    refuse_numbered_folders(["2", " 3", "bars"], partly, model, CHECKED, where="w", field="f")
    with pytest.raises(ReferenceSetError, match=r"folder 1: 'cross' in the model, 'bars'"):
        refuse_numbered_folders(["1", "2"], partly, model, CHECKED, where="w", field="f")
    # a class only the model has: the baseline reads its number as another class
    added = ClassMatch("name", {0: 0, 1: 1}, 3, 2, added=(2,))
    with pytest.raises(ReferenceSetError, match=r"folder 2: 'x' in the model, no class in the"):
        refuse_numbered_folders(["2"], added, ["a", "b", "x"], ["a", "b"], where="w", field="f")
    # index for index (or no baseline), a number is the same class in both versions
    # a number beyond both versions' classes is left to the set's own out-of-range error
    refuse_numbered_folders(["4", "281"], moved, model, CHECKED, where="w", field="f")
    for same in (ClassMatch.identity(4), None):
        refuse_numbered_folders(["0", "3"], same, model, CHECKED, where="w", field="f")


def test_a_check_refuses_a_numbered_reference_folder_when_classes_moved(
    clean, cache, tmp_path
) -> None:
    """run_check reads a folder set once, for the model; its numbered folders would mean
    other classes to a baseline whose classes moved: refused before anything is made."""
    from checks_shortcut_models import write_reference

    named = write_reference(tmp_path / "named", per_class=3)
    numbered = tmp_path / "numbered"
    numbered.mkdir()
    for i, name in enumerate(clean.class_names):
        (named / name).rename(numbered / str(i))
    reordered = version(clean, "shapes-reordered", REVERSED)
    fresh = tmp_path / "cache"
    with pytest.raises(ReferenceSetError, match="numbers its class folders") as info:
        run_check(reordered, baseline=clean, config=CONFIG, cache_dir=fresh, reference=numbered)
    assert info.value.field == "reference"
    assert f"the reference folder {numbered}" in info.value.message
    assert "folder 0: 'ring' in the model, 'disc' in the baseline" in info.value.message
    assert not fresh.exists() or not any(fresh.rglob("*"))  # nothing was generated
