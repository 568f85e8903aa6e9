"""Headless chromium driven by Playwright, for the HTML trace's browser tests and
``bench/bench_trace.py``: Debian's ``chromium`` through ``executable_path`` (no browser is
downloaded).

``viewer()`` starts chromium with one page (a new page costs a few hundred ms, a navigation
tens); ``Viewer.show`` opens a file in it at a viewport size, one CSS pixel per device pixel,
and waits until the page has marked itself drawn (``<body data-drawn="1">``, set after its
first paint). The errors its scripts raise are kept in ``Viewer.errors``.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator

from playwright.sync_api import Page, sync_playwright

__all__ = ["FLAGS", "Viewer", "chromium_path", "viewer"]

FLAGS = ("--no-sandbox", "--disable-gpu")
"""What headless chromium needs here: no sandbox as root, no GPU."""


def chromium_path() -> str:
    """The ``chromium`` binary on ``PATH`` (Debian's ``/usr/bin/chromium``)."""
    found = shutil.which("chromium")
    if found is None:
        raise FileNotFoundError("no chromium binary on PATH")
    return found


class Viewer:
    """One page of a headless chromium."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.errors: list[str] = []
        page.on("pageerror", lambda exc: self.errors.append(str(exc)))

    def show(self, url: str, width: int = 1400, height: int = 1000) -> Page:
        """The page showing ``url`` at ``width`` x ``height``, once drawn."""
        self.page.set_viewport_size({"width": width, "height": height})
        self.page.goto(url)
        self.page.wait_for_function("document.body && document.body.dataset.drawn === '1'")
        return self.page


@contextlib.contextmanager
def viewer() -> Iterator[Viewer]:
    """A headless chromium with one page, closed afterwards."""
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium_path(), args=list(FLAGS))
        try:
            yield Viewer(launched.new_page(device_scale_factor=1))
        finally:
            launched.close()
