"""The gallery's pure parts: the sealed session, intervals, the layer plot, grids and search."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest
from protolens.types import InputSpec, Job, Model, PrototypeSummary, ResolvedTarget
from protolens_server.errors import InvalidArgument
from protolens_server.web.api import group_models, interval_of, matches, version_cards
from protolens_server.web.plot import layer_plot_svg, layer_rows
from protolens_server.web.session import SessionSealer, csrf_ok, same_origin

SECRET = "s" * 40


def test_a_sealed_session_opens_only_untouched_unexpired_and_with_its_secret() -> None:
    sealer = SessionSealer(SECRET, lifetime_s=60)
    cookie = sealer.seal("pl_abc_secret", now=1000.0)
    assert "pl_abc" not in cookie and "secret" not in cookie
    opened = sealer.open(cookie, now=1030.0)
    assert opened is not None and opened.api_key == "pl_abc_secret"
    assert sealer.open(cookie, now=1061.0) is None  # expired
    flipped = cookie[:10] + ("A" if cookie[10] != "A" else "B") + cookie[11:]
    assert sealer.open(flipped, now=1030.0) is None  # tampered
    assert SessionSealer("t" * 40, 60).open(cookie, now=1030.0) is None  # another secret
    assert SessionSealer(SECRET, 60).open(cookie, now=1030.0) is not None  # a replica
    assert sealer.open("", now=0) is None and sealer.open("%%%", now=0) is None
    assert sealer.seal("k", now=0) != sealer.seal("k", now=0)  # a fresh nonce each time
    with pytest.raises(InvalidArgument):
        SessionSealer("short", 60)


def test_csrf_and_origin_checks() -> None:
    assert csrf_ok("abc", "abc") and not csrf_ok("abc", "abd") and not csrf_ok("", "")
    assert same_origin("http://h:1", "http", "h:1") and same_origin(None, "http", "h:1")
    assert not same_origin("https://evil.example", "http", "h:1")
    assert not same_origin("null", "http", "h:1")


@pytest.mark.parametrize(
    "scores",
    [
        {"path_similarity_interval": [0.1, 0.5]},
        {"path_similarity_ci": {"low": 0.1, "high": 0.5}},
        {"path_similarity_low": 0.1, "path_similarity_high": 0.5},
        {"intervals": {"path_similarity": {"lo": 0.1, "hi": 0.5}}},
    ],
)
def test_an_interval_is_read_wherever_the_scores_give_it(scores: dict) -> None:
    assert interval_of(scores, "path_similarity") == (0.1, 0.5)


def test_no_interval_is_none() -> None:
    assert interval_of({"path_similarity": 0.3}, "path_similarity") is None
    assert interval_of({"path_similarity_interval": [None, 0.5]}, "path_similarity") is None


def _scores(n: int = 4) -> dict:
    return {
        "layers": [f"block{i}" for i in range(n - 1)] + ["logits"],
        "spearman_normalised": [0.2, 0.9, 41.0, None][:n],
        "cosine_normalised": [0.3, 0.8, 1.1, 1.0][:n],
        "spearman_natural_same": [0.9] * n,
        "spearman_natural_other": [0.5] * n,
        "spearman_natural_same_sd": [0.04] * n,
        "spearman_natural_other_sd": [0.08] * n,
        "spearman_normalised_interval": [[0.0, 0.4], [0.7, 1.1], None, None][:n],
    }


def test_the_layer_plot_draws_bands_intervals_and_keeps_outliers_on_the_edge() -> None:
    rows = layer_rows(_scores())
    assert [r.name for r in rows] == ["block0", "block1", "block2", "logits"]
    assert rows[0].same_band == pytest.approx(0.1) and rows[0].other_band == pytest.approx(0.2)
    assert rows[0].interval == (0.0, 0.4) and rows[2].interval is None
    svg = layer_plot_svg(rows, "title")
    assert svg.startswith("<svg") and svg.count("<polygon") >= 3  # two bands and an outlier
    assert "block2: spearman 41.000 (off the chart)" in svg
    assert "interval [0.00, 0.40]" in svg and "interval [0.70, 1.10]" in svg
    ys = [float(v) for v in re.findall(r'cy="([\d.]+)"', svg)]
    assert max(ys) <= 300 and min(ys) >= 0  # nothing drawn outside the chart
    assert layer_plot_svg([], "none") == ""


def _model(ref: str, digest: str) -> Model:
    return Model(
        f"models/{ref}", "store", InputSpec(3, 16, 16, (0.5,), (0.25,)), 3, ("a", "b", "c"), digest
    )


def _job(job_id: str, model: str, digest: str, classes: list[int], state: str = "SUCCEEDED") -> Job:
    names = ("apple", "banana", "cherry")
    summaries = tuple(
        PrototypeSummary(
            f"jobs/{job_id}/prototypes/{i}", i,
            ResolvedTarget((c,), (names[c],), "prototype"), 0, 0.9, 3.0, (), 8, 0, False,
        )
        for i, c in enumerate(classes)
    )  # fmt: skip
    return Job(
        f"jobs/{job_id}", state, model, digest, prototypes=summaries,
        create_time=datetime(2026, 1, 1, tzinfo=UTC),
    )  # fmt: skip


def test_a_versions_grid_holds_its_newest_prototype_per_class_of_those_weights() -> None:
    v2 = _model("fruit@2", "d2")
    jobs = [  # newest first, as ListJobs gives them
        _job("new", "fruit@2", "d2", [0]),
        _job("old", "fruit@2", "d2", [0, 1]),
        _job("other-weights", "fruit@2", "dX", [2]),  # the file was replaced since
        _job("v1", "fruit@1", "d1", [2]),
        _job("failed", "fruit@2", "d2", [2], state="FAILED"),
    ]
    cards = version_cards(jobs, v2)
    assert [(c.job_id, c.label) for c in cards] == [("new", "apple"), ("old", "banana")]
    assert [g.name for g in group_models([v2, _model("fruit@1", "d1"), _model("tiny", "t")])] == [
        "fruit",
        "tiny",
    ]
    assert [
        m.id
        for m in group_models([v2, _model("fruit@10", "x"), _model("fruit@1", "d1")])[0].versions
    ] == [
        "fruit@1",
        "fruit@2",
        "fruit@10",
    ]


def test_class_search_by_words_or_index() -> None:
    assert matches("tabby", "tabby cat", (281,)) and matches("CAT tab", "tabby cat", (281,))
    assert matches("281", "tabby cat", (281,)) and not matches("28", "tabby cat", (281,))
    assert not matches("dog", "tabby cat", (281,)) and matches("", "anything", ())


def test_a_cached_prototype_is_served_again_only_while_its_key_was_accepted_recently() -> None:
    import time

    from protolens_server.web.api import PrototypeCache

    cache = PrototypeCache(recheck_s=0.05)
    assert not cache.fresh("alpha")
    cache.accepted("alpha")
    assert cache.fresh("alpha") and not cache.fresh("beta")
    time.sleep(0.06)
    assert not cache.fresh("alpha")  # the next hit asks the API first (GetJob)
