"""Headless Chromium driven over its DevTools protocol, with the standard library only.

Chromium started with ``--remote-debugging-pipe`` reads DevTools commands from file descriptor 3
and writes replies and events to descriptor 4, each message a JSON object ended by a NUL byte.
That is all a page check needs: open a page at a phone's size, evaluate a script in it, take a
screenshot::

    with Chromium() as browser:
        browser.open(Path("report.html").resolve().as_uri(), width=390, height=844, mobile=True)
        result = browser.evaluate("document.images.length")
        browser.screenshot("report.png")
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from .errors import DLCError

EXECUTABLES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


class BrowserError(DLCError, RuntimeError):
    """Chromium is missing, failed to start, or did not answer."""


def find_chromium() -> str:
    """The browser to run: ``$DLC_CHROMIUM``, else the first of ``EXECUTABLES`` on the PATH."""
    found = os.environ.get("DLC_CHROMIUM") or next(filter(None, map(shutil.which, EXECUTABLES)), None)
    if not found:
        raise BrowserError("no Chromium found: install Debian's chromium (apt-get install chromium, or "
                           "`make report-check` as root) or set DLC_CHROMIUM to a Chromium or Chrome binary")
    return found


class Chromium:
    """One headless browser with one page; a context manager that closes it."""

    def __init__(self, executable: str | None = None, timeout: float = 60.0):
        self.executable = executable or find_chromium()
        self.timeout = timeout
        self.next_id = 0
        self.session: str | None = None
        self.buffer = b""
        self.events: list[dict] = []

    def __enter__(self) -> Chromium:
        self.profile = tempfile.TemporaryDirectory(prefix="dlc-chromium-")
        to_browser, self.commands = os.pipe()  # we write commands, the browser reads fd 3
        self.replies, from_browser = os.pipe()  # the browser writes fd 4, we read replies

        def as_fds_3_and_4():  # in the child, before exec
            high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (to_browser, from_browser)]  # out of the way
            for fd, target in zip(high, (3, 4)):
                os.dup2(fd, target)  # an inheritable copy
                os.close(fd)

        args = [self.executable, "--headless", "--remote-debugging-pipe", "--disable-gpu", "--no-first-run",
                "--no-default-browser-check", "--hide-scrollbars", "--mute-audio",
                f"--user-data-dir={self.profile.name}", "about:blank"]
        if os.geteuid() == 0:
            args.insert(1, "--no-sandbox")  # Chromium refuses to run as root inside its sandbox
        try:
            # close_fds=False: Python's own descriptors are not inheritable anyway (PEP 446), and
            # closing would happen after preexec_fn, closing 3 and 4 too
            self.process = subprocess.Popen(args, preexec_fn=as_fds_3_and_4, close_fds=False,
                                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        except OSError as e:
            raise BrowserError(f"cannot start {self.executable}: {e}") from e
        finally:
            os.close(to_browser)
            os.close(from_browser)
        page = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=page, flatten=True)["sessionId"]
        self.call("Page.enable")
        return self

    def __exit__(self, *exc) -> None:
        try:
            self.session = None
            self.call("Browser.close")
        except BrowserError:
            pass
        finally:
            for fd in (self.commands, self.replies):
                os.close(fd)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.profile.cleanup()

    # ---- the protocol ------------------------------------------------------------------------

    def call(self, method: str, **params) -> dict:
        """Send one command (to the page's session once attached) and wait for its reply."""
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params}
        if self.session:
            message["sessionId"] = self.session
        os.write(self.commands, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._read()
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise BrowserError(f"Chromium refused {method}: {reply['error'].get('message')}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for_event(self, method: str) -> dict:
        """The first event ``method`` (already received or still to come)."""
        while True:
            for i, event in enumerate(self.events):
                if event.get("method") == method:
                    return self.events.pop(i)
            self.events.append(self._read())

    def _read(self) -> dict:
        deadline = time.monotonic() + self.timeout
        while b"\0" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.replies], [], [], left)[0]:
                raise BrowserError(f"Chromium did not answer within {self.timeout:.0f} s")
            chunk = os.read(self.replies, 1 << 20)
            if not chunk:
                raise BrowserError(f"Chromium exited (status {self.process.poll()}) before answering")
            self.buffer += chunk
        message, self.buffer = self.buffer.split(b"\0", 1)
        return json.loads(message)

    # ---- what a check needs ------------------------------------------------------------------

    def open(self, url: str, width: int = 1280, height: int = 900, mobile: bool = False, scale: float = 1.0) -> None:
        """Load ``url`` in a window of ``width`` x ``height`` CSS pixels (``mobile``: a phone's
        viewport, which honours the page's viewport meta tag) and wait for its load event."""
        self.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=scale,
                  mobile=mobile)
        self.events.clear()
        self.call("Page.navigate", url=url)
        self.wait_for_event("Page.loadEventFired")

    def evaluate(self, expression: str):
        """The value of a JavaScript expression in the page (a promise is awaited)."""
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise BrowserError(f"the page's script failed: {result['exceptionDetails'].get('text')}")
        return result["result"].get("value")

    def screenshot(self, path: str | Path) -> Path:
        """A PNG of the whole page, not only the window."""
        size = self.call("Page.getLayoutMetrics")["cssContentSize"]
        clip = {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}
        data = self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True, clip=clip)["data"]
        path = Path(path)
        path.write_bytes(base64.b64decode(data))
        return path
