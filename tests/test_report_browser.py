"""The report in a real browser: headless Chromium (Debian's `chromium`; CI installs it) loads the demo's report from
disk with the network cut off, through the Chrome DevTools Protocol spoken by a small WebSocket client below (the
standard library only, no new dependency). Checked: no console error or exception, no request but the file itself
(and no connection to the dead proxy every request would have to use), and every chart drawn (the pixels of each
chart's region in a full-page screenshot vary); and the page prints."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from PIL import Image, ImageStat
from test_report import demo_folder

CHROMIUM = next((shutil.which(name) for name in ("chromium", "chromium-browser", "google-chrome")
                 if shutil.which(name)), None)
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH: apt-get install -y chromium "
                                                         "(.ci/run does) to test the report in a real browser")


class DevTools:
    """A Chrome DevTools Protocol session over a minimal WebSocket client (RFC 6455: masked text frames out,
    unmasked frames in); events that arrive while waiting for a reply are kept in `events`."""

    def __init__(self, url: str):
        parts = urllib.parse.urlparse(url)
        self.sock = socket.create_connection((parts.hostname, parts.port), timeout=60)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(f"GET {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\nUpgrade: websocket\r\n"
                          f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
                          .encode())
        self.buffer = b""
        while b"\r\n\r\n" not in self.buffer:
            self.buffer += self.sock.recv(4096)
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        assert b" 101 " in head.split(b"\r\n")[0], head
        self.events: list[dict] = []
        self.last_id = 0

    def _send(self, text: str) -> None:
        data, mask = text.encode(), os.urandom(4)
        size = len(data)
        header = bytes([0x81]) + (bytes([0x80 | size]) if size < 126 else bytes([0x80 | 126]) + struct.pack(">H", size)
                                  if size < 65536 else bytes([0x80 | 127]) + struct.pack(">Q", size))
        self.sock.sendall(header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data)))

    def _read(self, n: int) -> bytes:
        while len(self.buffer) < n:
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise ConnectionError("the browser closed the DevTools connection")
            self.buffer += chunk
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data

    def _receive(self) -> dict:
        message = b""
        while True:
            first, second = self._read(2)
            size = second & 0x7F
            if size == 126:
                size = struct.unpack(">H", self._read(2))[0]
            elif size == 127:
                size = struct.unpack(">Q", self._read(8))[0]
            payload = self._read(size)
            if first & 0x0F in (0, 1):  # text and its continuations; pings and pongs are not sent to us here
                message += payload
                if first & 0x80:
                    return json.loads(message)

    def call(self, method: str, **params) -> dict:
        self.last_id += 1
        self._send(json.dumps({"id": self.last_id, "method": method, "params": params}))
        while True:
            reply = self._receive()
            if reply.get("id") == self.last_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]
            self.events.append(reply)

    def wait_for(self, method: str, seconds: float = 60) -> None:
        deadline = time.time() + seconds
        while not any(e.get("method") == method for e in self.events):
            assert time.time() < deadline, f"no {method} within {seconds}s"
            self.events.append(self._receive())


class DeadProxy:
    """A listening socket that every request of the browser would have to pass through: it notes the first line
    of each (the request, e.g. `CONNECT host:443`) and answers nothing."""

    def __init__(self):
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.requests: list[str] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self.server.accept()
            except OSError:
                return
            connection.settimeout(2)
            try:
                self.requests.append(connection.recv(4096).split(b"\r\n")[0].decode(errors="replace"))
            except OSError:
                self.requests.append("(nothing sent)")
            connection.close()


def browse(profile: Path, proxy: DeadProxy) -> tuple[DevTools, subprocess.Popen]:
    """Chromium on about:blank with the network cut off (every request sent to the dead proxy, loopback included;
    every host name unresolvable but the proxy's address), and a DevTools session on its page."""
    browser = subprocess.Popen([
        CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--remote-debugging-port=0",
        f"--user-data-dir={profile}", "--no-first-run", "--no-default-browser-check", "--disable-extensions",
        "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-default-apps",
        "--disable-features=NetworkTimeServiceQuerying,OptimizationHints,MediaRouter,Translate,"
        "AutofillServerCommunication,CertificateTransparencyComponentUpdater,InterestFeedContentSuggestions",
        "--disable-client-side-phishing-detection", "--disable-domain-reliability", "--no-pings",
        "--metrics-recording-only", "--safebrowsing-disable-auto-update", "--disable-breakpad",
        f"--proxy-server=http://127.0.0.1:{proxy.port}", "--proxy-bypass-list=<-loopback>",
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1", "--hide-scrollbars", "--window-size=1280,900",
        "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    port_file = profile / "DevToolsActivePort"
    deadline = time.time() + 60
    while not (port_file.exists() and port_file.read_text().strip()):
        assert browser.poll() is None and time.time() < deadline, "chromium did not start"
        time.sleep(0.1)
    port = port_file.read_text().split()[0]
    targets = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=30).read())
    session = DevTools(next(t for t in targets if t["type"] == "page")["webSocketDebuggerUrl"])
    for domain in ("Page", "Runtime", "Log", "Network"):
        session.call(f"{domain}.enable")
    return session, browser


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return demo_folder(tmp_path_factory)[0]


@pytest.fixture
def open_page(tmp_path):
    """Load a file in the browser; yields (session, proxy, url) and closes the browser after the test."""
    opened = []

    def load(page: Path) -> tuple[DevTools, DeadProxy, str]:
        proxy = DeadProxy()
        session, browser = browse(tmp_path / f"profile{len(opened)}", proxy)
        opened.append((session, browser, proxy))
        url = page.resolve().as_uri()
        session.call("Page.navigate", url=url)
        session.wait_for("Page.loadEventFired")
        session.call("Runtime.evaluate", expression="new Promise(r => requestAnimationFrame(() => r(1)))",
                     awaitPromise=True)
        return session, proxy, url

    yield load
    for session, browser, proxy in opened:
        session.sock.close()
        browser.terminate()
        browser.wait(30)
        proxy.server.close()


# Chromium's own services (sign-in, GCM, the search engine's preconnect; Debian's build has Google API keys) call
# these hosts whatever the page, even on about:blank: not the page's doing. Any other host at the proxy fails the test.
BROWSER_SERVICES = ("google.com",)


def page_traffic(proxy: DeadProxy) -> list[str]:
    """The requests that reached the dead proxy, less the browser's own services."""
    hosts = [(line, re.split(r"[ /:]+", line.split(" ", 1)[1].removeprefix("http://"))[0]) for line in proxy.requests
             if " " in line]
    return [line for line, host in hosts if not any(host == h or host.endswith("." + h) for h in BROWSER_SERVICES)]


def problems(session: DevTools, url: str) -> tuple[list[str], list[str]]:
    """(console errors and exceptions, requests for anything but the page itself)."""
    errors, requests = [], []
    for event in session.events:
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.consoleAPICalled" and params["type"] in ("error", "assert"):
            errors.append(json.dumps(params["args"])[:200])
        elif method == "Runtime.exceptionThrown":
            errors.append(params["exceptionDetails"].get("text", "exception"))
        elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
            errors.append(params["entry"]["text"][:200])
        elif method == "Network.requestWillBeSent" and params["request"]["url"] != url:
            requests.append(params["request"]["url"])
    return errors, requests


def test_the_harness_sees_errors_and_requests(tmp_path, open_page):
    bad = tmp_path / "bad.html"
    bad.write_text('<!doctype html><img src="http://example.com/x.png"><script>console.error("boom")</script>')
    session, proxy, url = open_page(bad)
    errors, requests = problems(session, url)
    assert any("boom" in e for e in errors) and requests == ["http://example.com/x.png"]
    assert page_traffic(proxy)  # the request went to the dead proxy: nothing else could be reached


def test_report_loads_offline_without_errors_and_every_chart_is_drawn(demo, open_page, tmp_path):
    session, proxy, url = open_page(demo / "report.html")
    errors, requests = problems(session, url)
    assert errors == [] and requests == [] and page_traffic(proxy) == []
    charts = session.call("Runtime.evaluate", returnByValue=True, expression="""
        [...document.querySelectorAll('[data-chart]')].map(f => {
            const r = f.querySelector('svg').getBoundingClientRect();
            return [f.dataset.chart, r.left + scrollX, r.top + scrollY, r.width, r.height]; })""")["result"]["value"]
    names = {name for name, *_ in charts}
    assert {"funnel-docs", "funnel-bytes", "languages", "dup-clusters", "tokens", "training-model", "plan",
            "signal-gopher_words", "signal-lang_score", "signal-characters"} <= names
    size = session.call("Page.getLayoutMetrics")["cssContentSize"]
    session.call("Emulation.setDeviceMetricsOverride", width=1280, height=int(size["height"]), deviceScaleFactor=1,
                 mobile=False)
    shot = Image.open(io.BytesIO(base64.b64decode(session.call("Page.captureScreenshot", format="png",
                                                                 captureBeyondViewport=True)["data"])))
    shot.save(tmp_path / "report.png")
    for name, x, y, width, height in charts:
        assert width > 100 and height > 20, name
        region = shot.crop((int(x), int(y), int(x + width), int(y + height))).convert("L")
        dark = sum(region.histogram()[:160]) / (region.width * region.height)
        assert ImageStat.Stat(region).stddev[0] > 10 and dark > 0.01, f"chart {name} looks blank"


def test_report_prints(demo, open_page):
    session, _, _ = open_page(demo / "report.html")
    pdf = base64.b64decode(session.call("Page.printToPDF", printBackground=False)["data"])
    pages = re.findall(rb"/Type\s*/Page[^s]", pdf)
    assert pdf.startswith(b"%PDF") and len(pages) >= 5  # the whole report, over several A4/Letter pages
