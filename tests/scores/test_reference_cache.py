"""Reference statistics are computed once per (model, layers, reference set) and reused."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator

import pytest
from protolens_server.engine import GenerationConfig, generate, score
from protolens_server.scores.cache import MEMORY_CACHE, cache_dir
from protolens_server.scores.references import ReferenceSet
from protolens_server.scores.scoring import score_prototypes, stored_image
from protolens_server.scores.statistics import reference_statistics


@contextlib.contextmanager
def count_forwards(module) -> Iterator[list[int]]:
    """Counts forward calls of ``module`` (one entry per call: its batch size)."""
    calls: list[int] = []
    h = module.register_forward_pre_hook(lambda _m, args: calls.append(args[0].shape[0]))
    try:
        yield calls
    finally:
        h.remove()


def test_second_call_does_no_reference_forward_pass(handle, shapenet, reference_folder, tmp_path):
    refset = ReferenceSet.from_folder(reference_folder, handle.class_names)
    with count_forwards(shapenet) as calls:
        first = reference_statistics(handle, refset, cache_dir=tmp_path)
    assert sum(calls) >= len(refset)  # every reference image went through the model

    with count_forwards(shapenet) as calls:
        again = reference_statistics(handle, refset, cache_dir=tmp_path)
    assert calls == [] and again is first  # from memory

    MEMORY_CACHE.clear()
    with count_forwards(shapenet) as calls:
        from_disk = reference_statistics(handle, refset, cache_dir=tmp_path)
    assert calls == []  # from disk
    assert from_disk.layers == first.layers and from_disk.digest == refset.digest
    for layer in first.layers:
        assert from_disk.means[layer].equal(first.means[layer])
    assert len(list(tmp_path.glob("*.pt"))) == 1

    with count_forwards(shapenet) as calls:
        reference_statistics(handle, refset, ["block2"], cache_dir=tmp_path)
    assert sum(calls) >= len(refset)  # another layer set is another entry


def test_scoring_twice_costs_only_the_prototype_passes(
    handle, shapenet, reference_folder, tmp_path
):
    protos = generate(handle, [1, 4], GenerationConfig(steps=8, equidistant_steps=2), seed=0)
    score_prototypes(handle, protos, reference_folder, robustness_samples=3, cache_dir=tmp_path)
    stats = reference_statistics(
        handle,
        ReferenceSet.from_folder(reference_folder, handle.class_names),
        cache_dir=tmp_path,
    )
    as_stored = [dataclasses.replace(p, image=stored_image(p.image)) for p in protos]
    with count_forwards(shapenet) as direct:
        expected = score(handle, as_stored, stats, robustness_samples=3)
    with count_forwards(shapenet) as calls:
        score_prototypes(handle, protos, reference_folder, robustness_samples=3, cache_dir=tmp_path)
    assert calls == direct and sum(calls) == len(protos) * (1 + 3)
    again = score_prototypes(
        handle, protos, reference_folder, robustness_samples=3, cache_dir=tmp_path
    )
    assert [s.to_dict() for s in again] == [s.to_dict() for s in expected]  # the stored image


def test_digest_follows_content_not_names(reference_folder, tmp_path, handle):
    a = ReferenceSet.from_folder(reference_folder, handle.class_names)
    b = ReferenceSet.from_folder(reference_folder, handle.class_names)
    assert a.digest == b.digest and len(a.digest) == 64
    first = next((reference_folder / "1").glob("*.png"))
    changed = tmp_path / "copy"
    pairs = [(im.path, im.class_index) for im in a.images]
    (changed).mkdir()
    altered = changed / "x.png"
    altered.write_bytes(first.read_bytes() + b"\0")
    c = ReferenceSet.from_pairs([*pairs[1:], (altered, 1)], handle.class_names)
    assert c.digest != a.digest


def test_cache_dir_from_environment(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("PROTOLENS_CACHE_DIR", str(tmp_path))
    assert cache_dir("refstats") == tmp_path / "refstats"
    assert cache_dir("checks") == tmp_path / "checks"
    assert cache_dir("refstats", tmp_path / "mine") == tmp_path / "mine"
    monkeypatch.delenv("PROTOLENS_CACHE_DIR")
    assert cache_dir("refstats").parts[-3:] == (".cache", "protolens", "refstats")


def test_digest_sees_a_file_rewritten_in_place(reference_folder, tmp_path, handle):
    import os
    import shutil

    root = tmp_path / "refs"
    shutil.copytree(reference_folder, root)
    before = ReferenceSet.from_folder(root, handle.class_names).digest
    assert ReferenceSet.from_folder(root, handle.class_names).digest == before  # memoised
    victim = next((root / "1").glob("*.png"))
    data = bytearray(victim.read_bytes())
    data[-1] ^= 0xFF
    victim.write_bytes(bytes(data))
    st = victim.stat()
    os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert ReferenceSet.from_folder(root, handle.class_names).digest != before


def test_class_bootstraps_are_saved_for_the_next_process(handle, reference_folder, tmp_path):
    """A class's bootstrap (the costly part of its first score) goes to the disk file too."""
    protos = generate(handle, [2], GenerationConfig(steps=8, equidistant_steps=2), seed=0)
    (first,) = score_prototypes(
        handle, protos, reference_folder, robustness_samples=0, cache_dir=tmp_path
    )
    MEMORY_CACHE.clear()  # as a new process would start
    refset = ReferenceSet.from_folder(reference_folder, handle.class_names)
    stats = reference_statistics(handle, refset, cache_dir=tmp_path)
    assert sorted(stats.replicated) == [(2, layer) for layer in sorted(stats.layers)]
    (again,) = score_prototypes(
        handle, protos, reference_folder, robustness_samples=0, cache_dir=tmp_path
    )
    assert again.to_dict() == first.to_dict()
