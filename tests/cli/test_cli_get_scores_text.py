"""``Scores.summary_text`` (the line ``protolens get`` prints under a scored prototype)
says what ``protolens generate --reference`` says for the same headline."""

from __future__ import annotations

from protolens.types import Estimate, Scores


def test_a_determinate_headline_with_its_interval_and_layers() -> None:
    scores = Scores(
        layer_names=tuple(f"l{i}" for i in range(18)),
        path_similarity=Estimate(0.4213, 0.3071, 0.5549),
        determinate_layers=12,
    )
    assert scores.summary_text() == "0.42 [0.31, 0.55] (12/18 layers)"


def test_an_undetermined_headline_says_why() -> None:
    scores = Scores(layer_names=("logits",), path_similarity=Estimate(reason="SPAN_UNRESOLVED"))
    assert scores.summary_text() == "n/a (SPAN_UNRESOLVED, 0/1 layers)"
    assert Scores(layer_names=("a", "b")).summary_text() == "n/a (not scored, 0/2 layers)"
