"""The TorchServe handler's request handling in process (no Java): what a request asks for
is what comes back, an alpha prototype as an RGBA PNG."""

from __future__ import annotations

import base64
import io
from pathlib import Path
from types import SimpleNamespace

import pytest
from PIL import Image
from protolens_server.api.testkit import TINY_MODEL, make_tiny_model_store
from protolens_server.models import load_model

pytest.importorskip("ts", reason="pip install torchserve (the dev extra has it)")


@pytest.fixture(scope="module")
def handler(tmp_path_factory: pytest.TempPathFactory):
    from protolens_server.torchserve.handler import PrototypeHandler

    store = make_tiny_model_store(tmp_path_factory.mktemp("ts-handler"))
    h = PrototypeHandler()
    h.handle_, h.device, h.initialized = load_model(str(store / f"{TINY_MODEL}.pt")), "cpu", True
    return h


class _Context(SimpleNamespace):
    def set_response_status(self, code: int, phrase: str, idx: int) -> None:
        self.status = (code, phrase)


def _png(body: dict) -> Image.Image:
    (proto,) = body["prototypes"]
    return Image.open(io.BytesIO(base64.b64decode(proto["png"])))


def test_alpha_request_returns_an_rgba_png(handler) -> None:
    base = {"class": 1, "steps": 8, "seed": 0, "lr": 0.1, "transforms": "small"}
    ctx = _Context()
    alpha, opaque = handler.handle([{"body": {**base, "alpha": True}}, {"body": base}], ctx)
    assert not hasattr(ctx, "status"), ctx.status
    image = _png(alpha)
    low, high = image.getchannel("A").getextrema()
    assert image.mode == "RGBA" and low < high  # the optimised opacity, not a flat 255
    assert _png(opaque).mode == "RGB" and alpha["alpha"] is True and opaque["alpha"] is False


def test_unknown_option_is_a_400_naming_it(handler, tmp_path: Path) -> None:
    ctx = _Context()
    (body,) = handler.handle([{"body": {"class": 1, "steps": 4, "colour": "red"}}], ctx)
    assert ctx.status[0] == 400 and "colour" in body["error"] and "alpha" in body["error"]
