"""The HTML report in a real headless Chromium: no console errors, nothing fetched but the
file itself and its data: URIs, and the screenshot shows the prototype grid."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from checks_browser import chromium_binary, open_page
from checks_shortcut_models import CONFIG, POLICY, write_reference
from PIL import Image
from protolens_server.checks import run_check, write_html

pytestmark = pytest.mark.skipif(
    chromium_binary() is None,
    reason="chromium is not installed: apt-get install -y chromium chromium-driver",
)
FLAGGED_BORDER = (0xCF, 0x22, 0x2E)  # .card.flagged border and FAIL badge
CARD_BACKGROUND = (0xF6, 0xF8, 0xFA)  # unflagged cards


def _count(img: Image.Image, colour: tuple[int, int, int], tol: int = 6) -> int:
    return sum(
        n
        for n, c in img.getcolors(maxcolors=img.width * img.height)
        if all(abs(a - b) <= tol for a, b in zip(c[:3], colour, strict=True))
    )


def test_report_opens_cleanly_and_shows_the_grid(catalog, tmp_path) -> None:
    result = run_check(
        "shapes@2",
        baseline="shapes@1",
        catalog=catalog,
        config=CONFIG,
        policy=POLICY,
        cache_dir=tmp_path / "cache",
        reference=write_reference(tmp_path / "reference"),
    )
    assert all(c.new.path_similarity is not None for c in result.classes)
    path = write_html(result, tmp_path / "report.html")
    assert path.read_text().count('alt="path similarity of') == 4  # SCORES' plots, embedded
    page = open_page(path)
    assert page.errors == []
    assert all(u.startswith(("file:", "data:")) for u in page.requests), page.requests
    img = Image.open(io.BytesIO(page.screenshot)).convert("RGB")
    assert img.width >= 1000 and img.height > 600
    assert len(img.getcolors(maxcolors=img.width * img.height)) > 500  # not blank: prototypes
    assert _count(img, FLAGGED_BORDER) > 500  # the flagged "bars" card's border, FAIL badge
    assert _count(img, CARD_BACKGROUND) > 5000  # unflagged cards of the grid


def test_the_browser_check_can_fail(tmp_path: Path) -> None:
    """The same harness sees a console error and an outside request (so the test above can fail)."""
    page = tmp_path / "bad.html"
    page.write_text(
        "<!DOCTYPE html><html><body><script>console.error('boom')</script>"
        "<img src='http://127.0.0.1:9/x.png'></body></html>"
    )
    load = open_page(page)
    assert "boom" in load.errors
    assert any(u.startswith("http://127.0.0.1:9/") for u in load.requests)
