"""A headless chromium driven over the Chrome DevTools protocol, for the HTML trace's browser
tests and ``bench/bench_trace.py``: open a page, wait until it is drawn, evaluate script in it,
click, take a screenshot.

The system's ``chromium`` is started with ``--remote-debugging-port=0``; it writes the port it
chose to ``DevToolsActivePort`` in its profile directory, and the page's target is driven over
one websocket (``websockets``' sync client), one command at a time.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any

from websockets.sync.client import ClientConnection, connect

__all__ = ["DRAWN", "Chromium", "chromium_path"]

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu")
"""What headless chromium needs here: no sandbox as root, no GPU."""

DRAWN = """new Promise(function(done){
  (function poll(){
    if (document.body && document.body.dataset.drawn === '1') done(true);
    else requestAnimationFrame(poll);
  })();
})"""
"""Script resolving once the page has set ``<body data-drawn="1">`` (after its first paint)."""


def chromium_path() -> str:
    """The ``chromium`` binary on ``PATH``."""
    found = shutil.which("chromium")
    if found is None:
        raise FileNotFoundError("no chromium binary on PATH")
    return found


class Chromium:
    """One headless chromium with one page, as a context manager."""

    def __init__(self, width: int = 1280, height: int = 900, start_timeout: float = 30.0) -> None:
        self.width, self.height = width, height
        self._profile = tempfile.TemporaryDirectory(prefix="converge-chromium-")
        self._stack = contextlib.ExitStack()
        self._proc = subprocess.Popen(
            [
                chromium_path(),
                *FLAGS,
                "--remote-debugging-port=0",
                f"--user-data-dir={self._profile.name}",
                f"--window-size={width},{height}",
                "--hide-scrollbars",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            # its own process group: chromium's helper processes outlive a terminated browser
            # process, so close() ends the whole group
            start_new_session=True,
        )
        try:
            port = self._port(Path(self._profile.name) / "DevToolsActivePort", start_timeout)
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as r:
                targets = json.load(r)
            page = next(t for t in targets if t["type"] == "page")
            self._ws: ClientConnection = self._stack.enter_context(
                connect(page["webSocketDebuggerUrl"], max_size=None)
            )
            self._next_id = 0
            self.events: list[dict[str, Any]] = []
            self.send("Page.enable")
            self.send("Runtime.enable")
            # The viewport exactly width x height CSS px, one device pixel each, whatever the
            # window's frame takes: a screenshot's pixels are the page's.
            self.send(
                "Emulation.setDeviceMetricsOverride",
                width=width,
                height=height,
                deviceScaleFactor=1,
                mobile=False,
            )
        except BaseException:
            self.close()
            raise

    def _port(self, file: Path, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"chromium exited with status {self._proc.returncode}")
            lines = file.read_text().splitlines() if file.exists() else []
            if len(lines) >= 2:  # the port, then the browser's websocket path
                return int(lines[0])
            time.sleep(0.02)  # polling a file chromium writes; no event to wait on
        raise TimeoutError(f"chromium wrote no {file.name} in {timeout} s")

    def send(self, method: str, **params: Any) -> dict[str, Any]:
        """Run one DevTools command; its ``result``. Events that arrive meanwhile are kept in
        ``events``."""
        self._next_id += 1
        self._ws.send(json.dumps({"id": self._next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self._ws.recv(timeout=60))
            if message.get("id") == self._next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                result: dict[str, Any] = message["result"]
                return result
            self.events.append(message)

    def wait_for_event(self, method: str) -> dict[str, Any]:
        """The first event named ``method`` not yet waited for (the oldest kept, or the next)."""
        for i, event in enumerate(self.events):
            if event.get("method") == method:
                return self.events.pop(i)
        while True:
            message = json.loads(self._ws.recv(timeout=60))
            if message.get("method") == method:
                return message
            self.events.append(message)

    def open(self, url: str) -> None:
        """Navigate to ``url`` and wait until the page is drawn (``data-drawn`` set)."""
        self.events.clear()
        self.send("Page.navigate", url=url)
        self.wait_for_event("Page.loadEventFired")
        if self.evaluate(DRAWN, await_promise=True) is not True:
            raise RuntimeError(f"{url} did not mark itself drawn")

    def evaluate(self, expression: str, *, await_promise: bool = False) -> Any:
        """The value of ``expression`` evaluated in the page (JSON-able values only)."""
        reply = self.send(
            "Runtime.evaluate",
            expression=expression,
            returnByValue=True,
            awaitPromise=await_promise,
        )
        if "exceptionDetails" in reply:
            raise RuntimeError(f"script failed: {reply['exceptionDetails']}")
        return reply["result"].get("value")

    def click(self, x: float, y: float) -> None:
        """A left click at viewport coordinates ``(x, y)``, as a user's mouse makes it."""
        for kind in ("mousePressed", "mouseReleased"):
            self.send("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1)

    def screenshot(self) -> bytes:
        """A PNG of the viewport."""
        return base64.b64decode(self.send("Page.captureScreenshot", format="png")["data"])

    def close(self) -> None:
        """Close the connection, end chromium and remove its profile; idempotent."""
        self._stack.close()
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(self._proc.pid, sig)
            except ProcessLookupError:  # the whole group has exited
                break
            # the browser first, gracefully; then SIGKILL whatever helper of it is left
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=10)
        self._profile.cleanup()

    def __enter__(self) -> Chromium:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
