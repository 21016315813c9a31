"""Browser tests of the console: Debian's chromium driven by Playwright for Python, against a
real worker (an embedded engine on a SQLite file, its REST API and console served by uvicorn
on a free loopback port).

Chromium must be installed (``apt-get install chromium``; ``.ci/run`` does it). Without it
these tests fail, never skip: a console that was never opened in a browser is not tested.
``playwright install`` (which downloads a browser) is never used: Playwright is pointed at
the system's chromium.

Fixtures:
- ``worker``: the running worker (``worker.url``, ``worker.run(coroutine_fn)`` to call the
  engine on its own loop, ``worker.api`` a sync httpx client of its REST API);
- ``page``: a fresh browser context and page; at teardown the test fails if the page logged a
  JavaScript error or a Content-Security-Policy violation;
- ``screenshot(page, name)``: a PNG of the page into ``docs/images/console/`` (the docs and
  README show them, so they stay current).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import threading
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, Playwright, Response, sync_playwright

from daggerflow import Dagger

from .workflows import register

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "docs" / "images" / "console"
VIEWPORT = {"width": 1280, "height": 800}
#: What Playwright waits for at most before an expectation fails (the live interval is 0.2 s).
TIMEOUT_MS = 10_000
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]

T = TypeVar("T")


def chromium_path() -> str:
    path = os.environ.get("DAGGERFLOW_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not os.path.exists(path):
        pytest.fail(
            f"chromium is not installed (looked for {path}): `apt-get install chromium` "
            "(or set DAGGERFLOW_CHROMIUM); the console's browser tests need a real browser",
            pytrace=False,
        )
    return path


# Per module, not per session: while Playwright's sync API is started it keeps an event loop
# running in the main thread, and the suite's asyncio tests that run after these modules
# could not start theirs.
@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    b = playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_FLAGS, headless=True)
    yield b
    b.close()


class Worker:
    """An embedded engine serving the API and the console, on its own event loop in a thread
    (Playwright's sync API runs in the test's thread)."""

    def __init__(self, make: Callable[[], Dagger]) -> None:
        self._make = make
        self._loop = asyncio.new_event_loop()
        self._started: Future[Dagger] = Future()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._main, name="console-test-worker", daemon=True)
        self._thread.start()
        self.engine = self._started.result(timeout=30)
        assert self.engine.web_url is not None
        self.url = self.engine.web_url
        self.api = httpx.Client(base_url=self.url, timeout=10)

    def _main(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._serve())

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        try:
            engine = self._make()
            await engine.start()
        except BaseException as exc:
            self._started.set_exception(exc)
            return
        self._started.set_result(engine)
        try:
            await self._stop.wait()
        finally:
            await engine.stop()

    def run(self, call: Callable[[Dagger], Awaitable[T]], timeout: float = 30) -> T:
        """``call(engine)`` on the worker's loop; its result here."""

        async def go() -> T:
            return await call(self.engine)

        return asyncio.run_coroutine_threadsafe(go(), self._loop).result(timeout)

    def close(self) -> None:
        self.api.close()
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)
        self._loop.close()


def start_worker(tmp_path: Path, **options: Any) -> Worker:
    def make() -> Dagger:
        options.setdefault("console_refresh", 0.2)
        options.setdefault("store", f"sqlite:///{tmp_path}/console.db")
        engine = Dagger(web_port=0, **options)
        register(engine)
        return engine

    return Worker(make)


@pytest.fixture
def worker(tmp_path: Path) -> Iterator[Worker]:
    w = start_worker(tmp_path)
    yield w
    w.close()


#: How chromium logs any answer of 400 or more: for a page itself that is what an error
#: page test expects; a failed sub-request (a script, a style, an htmx or SSE request) is
#: caught from the network instead (``PageErrors.response``).
_HTTP_ERROR_LOG = "Failed to load resource: the server responded with a status of"


class PageErrors:
    def __init__(self) -> None:
        self.errors: list[str] = []

    def console(self, message: ConsoleMessage) -> None:
        if message.type == "error" and not message.text.startswith(_HTTP_ERROR_LOG):
            self.errors.append(f"console error: {message.text}")

    def response(self, response: Response) -> None:
        if response.status >= 400 and response.request.resource_type != "document":
            self.errors.append(f"{response.request.resource_type} {response.url} answered {response.status}")

    def page_error(self, error: Any) -> None:
        self.errors.append(f"uncaught: {error}")


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport=VIEWPORT, color_scheme="light")
    context.set_default_timeout(TIMEOUT_MS)
    p = context.new_page()
    errors = PageErrors()
    p.on("console", errors.console)
    p.on("pageerror", errors.page_error)
    p.on("response", errors.response)
    yield p
    context.close()
    assert errors.errors == [], "the page logged errors"


def take_screenshot(page: Page, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=False)
    return path


@pytest.fixture
def screenshot() -> Callable[[Page, str], Path]:
    return take_screenshot
