"""The suite's ``xdist_group`` marks must reach xdist.

The groups keep tests that share an expensive set-up on one worker (the shortcut
suite's trained models, the learning rate found for EfficientNet-Lite0). pytest 9
with pytest-xdist 3.8 dropped them without a word, and CI ran minutes longer.
"""

from __future__ import annotations

import pytest


@pytest.mark.xdist_group("grouping-check")
def test_xdist_applies_the_suites_groups(request: pytest.FixtureRequest) -> None:
    config = request.config
    if not hasattr(config, "workerinput") or not config.getvalue("loadgroup"):
        pytest.skip("only meaningful under xdist with --dist loadgroup, as scripts/test runs")
    assert request.node.nodeid.endswith("@grouping-check"), (
        f"xdist ignored this test's xdist_group (node id {request.node.nodeid!r}): install the "
        "pytest and pytest-xdist versions pyproject.toml allows"
    )
