"""An alpha prototype in the gallery: its page says what the transparency means, its PNG is
RGBA, and images sit on a checkerboard so transparent parts show as such."""

from __future__ import annotations

import io

from PIL import Image
from web_support import Gallery


def test_alpha_prototype_page_and_png(gallery: Gallery, http_for) -> None:
    h = http_for("alpha")
    job = gallery.jobs["rgba"]
    status, _, body = h.request(f"/jobs/{job}/prototypes/0")
    assert status == 200 and b"alpha prototype" in body
    status, _, png = h.request(f"/jobs/{job}/prototypes/0.png")
    image = Image.open(io.BytesIO(png))
    assert status == 200 and image.mode == "RGBA"
    alpha = image.getchannel("A")
    assert alpha.getextrema()[0] < 255  # not all opaque
    status, _, css = h.request("/static/gallery.css")
    assert status == 200 and b"repeating-conic-gradient" in css
    status, _, plain = h.request(f"/jobs/{gallery.jobs['tiny']}/prototypes/0")
    assert b"alpha prototype" not in plain


def test_isolation_page_says_what_the_mask_found(gallery: Gallery, http_for) -> None:
    h = http_for("alpha")
    job = gallery.jobs["isolation"]
    status, _, body = h.request(f"/jobs/{job}/prototypes/0")
    assert status == 200 and b"feature isolation" in body and b"with it removed" in body
    status, _, png = h.request(f"/jobs/{job}/prototypes/0.png")
    assert status == 200 and Image.open(io.BytesIO(png)).mode == "RGBA"
