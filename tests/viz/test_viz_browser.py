"""The report as a person sees it: opened in headless Chromium, checked, photographed.

Chromium is driven over its DevTools protocol on a pipe (`--remote-debugging-pipe`: JSON
messages ending in NUL on file descriptors 3 and 4), so the test sees what the page really
did: every image decoded, every console message, every network request. Nothing is
downloaded; Debian's /usr/bin/chromium is used as installed.
"""

from __future__ import annotations

import base64
import io
import json
import os
import select
import shutil
import signal
import subprocess
import tempfile
import time

import numpy as np
import pytest
from PIL import Image

from demoset.viz.report import build_report

from tests.viz.test_viz_outliers import CRAFTED, write_outlier_dataset

CHROMIUM = "/usr/bin/chromium"

pytestmark = pytest.mark.skipif(
    not os.path.exists(CHROMIUM), reason="Debian's chromium is not installed at /usr/bin/chromium"
)

IMAGES_JS = """
Promise.all(Array.from(document.images).map(img =>
  img.decode().then(
    () => ({alt: img.alt, ok: img.complete && img.naturalWidth > 0, w: img.naturalWidth}),
    err => ({alt: img.alt, ok: false, w: img.naturalWidth, error: String(err)}))))
"""


class Chromium:
    """A headless Chromium driven over the DevTools protocol on a pipe."""

    def __init__(self, timeout: float = 60.0):
        self.timeout = timeout
        self.profile = tempfile.mkdtemp(prefix="demoset-chromium-")
        child_in, self._to_child = os.pipe()
        self._from_child, child_out = os.pipe()

        def wire_pipes() -> None:  # Chromium reads commands on fd 3 and answers on fd 4
            os.dup2(child_in, 3)
            os.dup2(child_out, 4)

        self.proc = subprocess.Popen(
            [
                CHROMIUM,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--hide-scrollbars",
                f"--user-data-dir={self.profile}",
                "--remote-debugging-pipe",
                "about:blank",
            ],
            pass_fds=(3, 4, child_in, child_out),
            preexec_fn=wire_pipes,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        os.close(child_in)
        os.close(child_out)
        self._buffer = b""
        self._last_id = 0
        self.events: list[dict] = []

    # ------------------------------------------------------------------ protocol
    def _send(self, method: str, params: dict | None, session: str | None) -> int:
        self._last_id += 1
        message = {"id": self._last_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._to_child, json.dumps(message).encode() + b"\0")
        return self._last_id

    def _receive(self, deadline: float) -> dict:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self._from_child], [], [], max(0.0, left))
            if not ready:
                raise TimeoutError("chromium did not answer in time")
            chunk = os.read(self._from_child, 1 << 20)
            if not chunk:
                raise EOFError("chromium closed the DevTools pipe")
            self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(raw)

    def call(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        wanted = self._send(method, params, session)
        deadline = time.monotonic() + self.timeout
        while True:
            message = self._receive(deadline)
            if message.get("id") == wanted:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            if "method" in message:
                self.events.append(message)

    def wait_for(self, event: str, session: str) -> dict:
        for i, message in enumerate(self.events):
            if message["method"] == event and message.get("sessionId") == session:
                return self.events.pop(i)
        deadline = time.monotonic() + self.timeout
        while True:
            message = self._receive(deadline)
            if message.get("method") == event and message.get("sessionId") == session:
                return message
            if "method" in message:
                self.events.append(message)

    def close(self) -> None:
        try:
            self.call("Browser.close")
        except Exception:  # noqa: BLE001 - a browser that already died is closed too
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)  # the process group we started
            self.proc.wait()
        for fd in (self._to_child, self._from_child):
            try:
                os.close(fd)
            except OSError:
                pass
        shutil.rmtree(self.profile, ignore_errors=True)

    # ------------------------------------------------------------------ pages
    def open(self, url: str, width: int = 1280, height: int = 900) -> str:
        """Open `url` in a new tab of the given size, wait for its load event; returns the session."""
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})[
            "sessionId"
        ]
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.call(f"{domain}.enable", session=session)
        self.call(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
            session=session,
        )
        self.call("Page.navigate", {"url": url}, session=session)
        self.wait_for("Page.loadEventFired", session)
        return session

    def evaluate(self, session: str, expression: str):
        result = self.call(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": True},
            session=session,
        )
        if "exceptionDetails" in result:
            raise RuntimeError(json.dumps(result["exceptionDetails"])[:500])
        return result["result"].get("value")

    def screenshot(self, session: str, path, width: int = 1280, max_height: int | None = None):
        """A PNG of the whole page (or its top `max_height` pixels)."""
        height = int(
            self.call("Page.getLayoutMetrics", session=session)["cssContentSize"]["height"]
        )
        if max_height:
            height = min(height, max_height)
        clip = {"x": 0, "y": 0, "width": width, "height": height, "scale": 1}
        data = self.call(
            "Page.captureScreenshot",
            {"format": "png", "captureBeyondViewport": True, "clip": clip},
            session=session,
        )["data"]
        with open(path, "wb") as fh:
            fh.write(base64.b64decode(data))
        return path

    def problems(self, session: str) -> list[str]:
        """Console errors, uncaught exceptions, failed loads, and requests leaving the file."""
        found = []
        for message in self.events:
            if message.get("sessionId") != session:
                continue
            method, params = message["method"], message.get("params", {})
            if method == "Runtime.exceptionThrown":
                found.append("exception: " + json.dumps(params.get("exceptionDetails"))[:300])
            elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                found.append(f"console.{params['type']}: " + json.dumps(params.get("args"))[:300])
            elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
                found.append("log: " + params["entry"].get("text", "")[:300])
            elif method == "Network.requestWillBeSent":
                url = params["request"]["url"]
                if not url.startswith(("data:", "file:")):
                    found.append("network request: " + url[:200])
            elif method == "Network.loadingFailed":
                found.append("failed load: " + params.get("errorText", ""))
        return found


@pytest.fixture(scope="module")
def chromium():
    browser = Chromium()
    yield browser
    browser.close()


def check_page(browser: Chromium, html_path) -> tuple[str, list[dict], list[str]]:
    session = browser.open("file://" + os.path.abspath(html_path))
    images = browser.evaluate(session, IMAGES_JS)
    return session, images, browser.problems(session)


def test_the_page_check_catches_a_broken_image_and_a_console_error(chromium, tmp_path):
    """The checks below can fail: a page with a broken image and an error is caught."""
    good = io.BytesIO()
    Image.new("RGB", (4, 4), "red").save(good, format="PNG")
    page = tmp_path / "broken.html"
    page.write_text(
        '<html><body><img alt="broken" src="data:image/png;base64,AAAA">'
        f'<img alt="fine" src="data:image/png;base64,{base64.b64encode(good.getvalue()).decode()}">'
        "<script>console.error('boom')</script></body></html>"
    )
    _, images, problems = check_page(chromium, page)
    assert [(i["alt"], i["ok"]) for i in images] == [("broken", False), ("fine", True)]
    assert any("boom" in p for p in problems)


def test_report_renders_every_image_without_errors(chromium, tmp_path):
    path = write_outlier_dataset(tmp_path / "odd.hdf5")
    out = tmp_path / "report.html"
    result = build_report(path, out, n_camera_demos=3, clip_frames=8, n_plot_demos=3)
    assert {(o.demo, o.kind) for o in result.outliers} == CRAFTED
    session, images, problems = check_page(chromium, out)
    assert problems == []
    broken = [i for i in images if not i["ok"]]
    assert broken == []
    # 5 plots (lengths, action histograms, actions, eef_pos... ) + 3 clips + 3 strips + 2 thumbnails
    assert len(images) == out.read_text().count("<img ") == 4 + 3 + 3 + 2
    # the layout holds: sections are laid out, plots are shown at their width
    geometry = chromium.evaluate(
        session,
        "({sections: document.querySelectorAll('section').length,"
        " plotWidths: Array.from(document.querySelectorAll('.plot img')).map(i => i.clientWidth),"
        " pageWidth: document.documentElement.scrollWidth})",
    )
    assert geometry["sections"] == 7
    assert geometry["pageWidth"] <= 1280  # nothing overflows sideways
    assert all(w >= 900 for w in geometry["plotWidths"])
    shot = chromium.screenshot(session, tmp_path / "report.png")
    with Image.open(shot) as im:
        assert im.width == 1280 and im.height > 3000
        pixels = np.asarray(im.convert("RGB"))[::4, ::4].reshape(-1, 3)
    # a real page: many distinct colours (plots, frames), not a blank or error screen
    assert len(np.unique(pixels, axis=0)) > 500
