"""The gallery in a real headless Chromium: clean page loads, keyboard use, live progress."""

from __future__ import annotations

import time

import pytest
from web_browser import Browser, chromium_binary
from web_support import Gallery

pytestmark = [
    pytest.mark.xdist_group("web"),
    pytest.mark.skipif(
        chromium_binary() is None,
        reason="chromium is not installed: apt-get install -y chromium chromium-driver",
    ),
]


def sign_in(b: Browser, g: Gallery, tenant: str) -> None:
    """As a person would: the gallery sends us to the form, we type the key and press Enter."""
    load = b.goto(g.url + "/")
    assert load.url.startswith(g.url + "/login"), load.url
    assert b.focus().tag == "input"  # the key field has the focus
    b.session.call("Input.insertText", text=g.keys[tenant])
    load = b.enter()
    assert load.url == g.url + "/" and load.errors == [], load


@pytest.fixture(scope="module")
def browser(gallery: Gallery):  # type: ignore[no-untyped-def]
    with Browser(width=1280, height=900) as b:
        sign_in(b, gallery, "alpha")
        yield b


def test_pages_load_without_console_errors_or_outside_requests(
    gallery: Gallery, browser: Browser
) -> None:
    job, check = gallery.jobs["fruit@2"], gallery.check
    pages = [
        "/",
        "/models/fruit@2",
        "/models/fruit@2?q=ban",
        "/models/tiny",
        "/search?q=banana",
        "/jobs",
        f"/jobs/{job}",
        f"/jobs/{job}/prototypes/0",
        "/checks",
        f"/checks/{check}",
        "/compare?model=fruit",
        "/no/such/page",
    ]
    for path in pages:
        load = browser.goto(gallery.url + path)
        missing = path == "/no/such/page"
        # the only message a 404 page may log is Chromium's note of its own status
        errors = [e for e in load.errors if not (missing and "status of 404" in e)]
        assert errors == [], (path, load.errors)
        outside = [u for u in load.requests if not u.startswith((gallery.url, "data:"))]
        assert outside == [], (path, outside)
        expected = 404 if missing else 200
        assert load.statuses.get(gallery.url + path) == expected, (path, load.statuses)
        assert all(s == 200 for u, s in load.statuses.items() if u != gallery.url + path)
    shot = browser.screenshot()
    assert len(shot) > 5000


def test_the_check_view_puts_flagged_classes_first_and_draws_the_graph(
    gallery: Gallery, browser: Browser
) -> None:
    browser.goto(f"{gallery.url}/checks/{gallery.check}")
    cards = "[...document.querySelectorAll('.pair-card')]"
    names = browser.eval(f"{cards}.map(c => c.querySelector('h3').innerText)")
    flagged = browser.eval(f"{cards}.map(c => c.classList.contains('flagged'))")
    assert len(names) == 2 and flagged == sorted(flagged, reverse=True), (names, flagged)
    assert browser.eval("document.querySelectorAll('.pair img').length") == 4  # both versions
    assert browser.eval("!!document.querySelector('.graph svg[aria-label=\"entanglement graph\"]')")
    images = "[...document.querySelectorAll('.pair img')]"
    assert browser.eval(f"{images}.every(i => i.complete && i.naturalWidth > 0)")


def test_keyboard_reaches_every_control_with_a_visible_focus(
    gallery: Gallery, browser: Browser
) -> None:
    browser.goto(gallery.url + "/models/fruit@2")
    first = browser.tab()
    assert (first.tag, first.text) == ("a", "Skip to content") and first.visible
    stops = [first]
    for _ in range(40):
        focus = browser.tab()
        if focus.href.startswith("/jobs/") and focus.href.endswith("/prototypes/0"):
            stops.append(focus)
            break
        stops.append(focus)
    hidden = [f for f in stops if not f.visible or not f.in_viewport]
    assert hidden == [], hidden
    texts = [f.text for f in stops]
    for wanted in ("Models", "Jobs", "Checks", "Compare", "Search", "Filter"):
        assert any(t == wanted for t in texts), (wanted, texts)
    assert stops[-1].href.endswith("/prototypes/0"), texts  # the first card, in order
    assert [f.text for f in stops].index("Models") < [f.text for f in stops].index("Filter")
    load = browser.enter()  # open it with the keyboard
    assert "/prototypes/0" in load.url and load.errors == []
    for _ in range(30):
        focus = browser.tab()
        if focus.text == "Download PNG":
            break
    assert focus.text == "Download PNG" and focus.visible and focus.href.endswith(".png?download=1")
    back = browser.tab(shift=True)
    assert back.visible and back.text != "Download PNG"


def test_a_running_job_updates_live_then_shows_its_prototypes(
    gallery: Gallery, browser: Browser
) -> None:
    with gallery.client("alpha") as client:
        job = client.create_prototype_job(
            "tiny", ["apple"], config={"steps": 1500, "progress_every": 10}, seed=5
        )
        load = browser.goto(f"{gallery.url}/jobs/{job.id}")
        seen = set()
        deadline = time.monotonic() + 240  # generous: CI machines may be loaded
        while time.monotonic() < deadline:
            box = "(document.querySelector('.progress-box') || {}).innerText || ''"
            seen.add(browser.eval(box))
            if browser.eval("!!document.querySelector('.grid .card')"):
                break  # the page reloaded itself once the job ended
            load = browser.wait_idle(0.5)
            assert load.errors == [], load.errors
        final = client.get_job(job)
    assert final.state == "SUCCEEDED"
    assert browser.eval("document.querySelector('.badge').innerText").lower() == "succeeded"
    steps = {line for text in seen for line in text.splitlines() if "steps" in line}
    assert len(steps) >= 2, seen  # the count moved while we watched
    assert any("optimising" in text.lower() or "preparing" in text.lower() for text in seen), seen
