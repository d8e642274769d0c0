"""A real headless Chromium for the gallery: pages over HTTP, keyboard, screenshots.

Reuses ``tests/checks/checks_browser.py`` (Debian's /usr/bin/chromium over the
DevTools protocol with websocket-client): its flags, its session and its way of
starting Chromium. Adds what an interactive page needs: one browser for many page
loads (``Browser``), console errors per load, pressing Tab and reading which element
has the focus and whether the focus is visible, clicking by keyboard (Enter), and
waiting for a live region to change.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "checks"))

from checks_browser import FLAGS, _Session, chromium_binary

__all__ = ["Browser", "Focus", "Load", "chromium_binary"]

_FOCUS_JS = """(() => {
  const e = document.activeElement, s = getComputedStyle(e), r = e.getBoundingClientRect();
  const text = e.innerText || e.value || e.getAttribute('aria-label') || '';
  return {tag: e.tagName.toLowerCase(), text: text.trim().slice(0, 80),
          href: e.getAttribute('href') || '', outline: s.outlineStyle + ' ' + s.outlineWidth,
          box_shadow: s.boxShadow, in_viewport: r.bottom > 0 && r.top < innerHeight};
})()"""


@dataclass
class Load:
    """One navigation: its final URL, what went wrong on the console, what it fetched."""

    url: str
    errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    statuses: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Focus:
    """The focused element after a key press."""

    tag: str
    text: str
    href: str
    outline: str  # computed outline style/width: "none 0px" when the focus is invisible
    box_shadow: str
    in_viewport: bool

    @property
    def visible(self) -> bool:
        style, width = [*self.outline.split(), "", ""][:2]
        return (style not in ("", "none") and width not in ("0px", "")) or (
            self.box_shadow not in ("", "none")
        )


class Browser:
    """``with Browser() as b: load = b.goto(url); b.tab(); b.screenshot(path)``."""

    def __init__(self, width: int = 1280, height: int = 900) -> None:
        self.width, self.height = width, height
        self.proc: subprocess.Popen[bytes] | None = None
        self.profile = Path(tempfile.mkdtemp(prefix="protolens-web-chromium-"))
        self.s: _Session | None = None

    def __enter__(self) -> Browser:
        binary = chromium_binary()
        assert binary, "chromium is not installed"
        self.proc = subprocess.Popen(
            [
                binary,
                *FLAGS,
                f"--user-data-dir={self.profile}",
                f"--window-size={self.width},{self.height}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        port_file = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not (port_file.exists() and port_file.read_text().strip()):
            assert self.proc.poll() is None, "chromium exited at start"
            assert time.monotonic() < deadline, "chromium did not open its DevTools port"
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        req = urllib.request.Request(f"http://127.0.0.1:{port}/json/new?about:blank", method="PUT")
        with urllib.request.urlopen(req, timeout=10) as resp:
            target = json.loads(resp.read())
        self.s = _Session(target["webSocketDebuggerUrl"])
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.s.call(f"{domain}.enable")
        self.s.call(
            "Emulation.setDeviceMetricsOverride",
            width=self.width,
            height=self.height,
            deviceScaleFactor=1,
            mobile=False,
        )
        return self

    def __exit__(self, *exc: object) -> None:
        if self.s is not None:
            self.s.ws.close()
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.profile, ignore_errors=True)

    @property
    def session(self) -> _Session:
        assert self.s is not None, "use Browser as a context manager"
        return self.s

    def goto(self, url: str, settle_s: float = 0.4) -> Load:
        s = self.session
        s.events.clear()
        s.call("Page.navigate", url=url)
        s.wait_for("Page.loadEventFired")
        s.drain(settle_s)
        return self._collect()

    def wait_idle(self, seconds: float) -> Load:
        """Let the page run (htmx polling) for ``seconds``; what it logged meanwhile."""
        self.session.events.clear()
        self.session.drain(seconds)
        return self._collect()

    def _collect(self) -> Load:
        load = Load(url=self.eval("location.href"))
        for e in self.session.events:
            method, p = e.get("method"), e.get("params", {})
            if method == "Runtime.consoleAPICalled" and p.get("type") in ("error", "warning"):
                load.errors.append(" ".join(str(a.get("value")) for a in p.get("args", [])))
            elif method == "Runtime.exceptionThrown":
                load.errors.append(p["exceptionDetails"].get("text", "exception"))
            elif method == "Log.entryAdded" and p["entry"]["level"] in ("error", "warning"):
                load.errors.append(p["entry"]["text"] + " " + p["entry"].get("url", ""))
            elif method == "Network.requestWillBeSent":
                load.requests.append(p["request"]["url"])
            elif method == "Network.responseReceived":
                load.statuses[p["response"]["url"]] = int(p["response"]["status"])
        return load

    def eval(self, expression: str) -> Any:
        result = self.session.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def key(self, key: str, code: str, keycode: int, shift: bool = False) -> None:
        modifiers = 8 if shift else 0
        for kind in ("rawKeyDown", "keyUp"):
            self.session.call(
                "Input.dispatchKeyEvent",
                type=kind,
                key=key,
                code=code,
                windowsVirtualKeyCode=keycode,
                nativeVirtualKeyCode=keycode,
                modifiers=modifiers,
            )
        if key == "Enter":
            self.session.call("Input.dispatchKeyEvent", type="char", text="\r", modifiers=modifiers)

    def tab(self, shift: bool = False) -> Focus:
        """Press Tab (Shift+Tab) like a keyboard user; the element that now has the focus."""
        self.key("Tab", "Tab", 9, shift)
        return self.focus()

    def focus(self) -> Focus:
        info = self.eval(_FOCUS_JS)
        return Focus(**info)

    def enter(self) -> Load:
        """Press Enter on the focused element and wait for the navigation it starts."""
        self.session.events.clear()
        self.key("Enter", "Enter", 13)
        self.session.wait_for("Page.loadEventFired")
        self.session.drain(0.3)
        return self._collect()

    def screenshot(self, path: Path | None = None, full_page: bool = True) -> bytes:
        s = self.session
        metrics = s.call("Page.getLayoutMetrics")
        size = metrics.get("cssContentSize") or metrics["contentSize"]
        height = size["height"] if full_page else self.height
        shot = s.call(
            "Page.captureScreenshot",
            format="png",
            captureBeyondViewport=full_page,
            clip={"x": 0, "y": 0, "width": self.width, "height": height, "scale": 1},
        )
        data = base64.b64decode(shot["data"])
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        return data
