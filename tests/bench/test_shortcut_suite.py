"""The planted-shortcut suite, CI-sized: tiny models trained here, a real ``protolens check``
with DEFAULT generation settings and ``--policy default``, the real detectors.

Each case must: be learned, flag the shortcut class and fail the default policy on it
(its drift stands out among the classes: ``max_drift_z``), reveal the shortcut by the
detector's margin, and flag at most one other class (the issue's bar).
The full suite: ``python bench/shortcut_suite.py`` (docs/checks.md).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

from shortcut_suite import Case, run_case  # noqa: E402

# Tiny: about 5 s of training each on one free core (clean accuracy about 0.9).
TINY = {"n_train": 1500, "epochs": 5, "width": 16, "lr": 5e-3}


KINDS = ("background", "patch")

# One xdist worker runs the module: its module-scoped ``rows`` trains and checks the cases
# once, not once per worker its tests would otherwise be spread over.
# (Groups need pytest < 9 with xdist 3.8: pyproject.toml pins it.)
pytestmark = pytest.mark.xdist_group("shortcut_suite")


@pytest.fixture(scope="module")
def rows(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    """Each case trained and checked once (module scope); the tests read its row."""
    import torch

    work = tmp_path_factory.mktemp("suite")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    mp = pytest.MonkeyPatch()
    mp.setenv("OMP_NUM_THREADS", "1")  # the check's own process
    try:
        return {
            kind: run_case(
                Case(kind, "cnn_bn", "spec", **TINY),
                work / "store",
                work,
                [],
                model_cache=work / "models",
            )
            for kind in KINDS
        }
    finally:
        mp.undo()
        torch.set_num_threads(before)


@pytest.mark.parametrize("kind", KINDS)
def test_planted_shortcut_is_learned_flagged_and_fails_the_default_policy(
    kind: str, rows: dict[str, dict]
) -> None:
    row = rows[kind]
    # The planting worked: the model calls other classes' images the shortcut class once
    # the pure shortcut is pasted on them; its twin does not.
    assert row["reliance"] > 0.5 and row["twin_reliance"] < 0.1, row
    assert row["accuracy"] > 0.75 and row["twin_accuracy"] > 0.75, row
    assert row["config"] and row["check_seconds"] > 0
    assert row["flagged"], row["flagged_classes"]
    assert "cross_score" in row["target_flags"], row["target_flags"]
    assert row["policy"] == "FAIL" and row["exit_code"] == 1
    assert "max_drift_z" in row["failed_rules"] and "drift" in row["target_flags"]
    # the twin's prototype of that class shows less of the shortcut than the new one
    assert row["detector"]["score"] > row["detector"]["twin_score"], row["detector"]


def test_background_is_revealed_by_its_detector(rows: dict[str, dict]) -> None:
    detector = rows["background"]["detector"]
    assert detector["revealed"], detector
    assert detector["lead"] >= detector["margin"] == 0.02


@pytest.mark.parametrize("kind", KINDS)
def test_issue_bar_revealed_and_at_most_one_false_alarm(kind: str, rows: dict[str, dict]) -> None:
    row = rows[kind]
    assert row["detector"]["revealed"], row["detector"]
    assert row["false_alarms"] <= 1, row["flagged_classes"]
    assert row["ok"]


def test_another_train_seed_is_another_instance_of_every_model() -> None:
    shortcut, control = Case("patch", "cnn_bn", "spec"), Case(None, "cnn_bn", "spec")
    assert (shortcut.model.seed, shortcut.twin.seed, control.model.seed) == (0, 0, 1)  # as before
    again = [Case(k, "cnn_bn", "spec", train_seed=2) for k in ("patch", None)]
    assert (again[0].model.seed, again[0].twin.seed, again[1].model.seed) == (4, 4, 5)
    assert again[0].model != shortcut.model and again[0].name == shortcut.name
