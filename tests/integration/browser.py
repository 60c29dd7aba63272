"""A real headless browser for the integration tests: Debian's chromium driven by Selenium
through Debian's chromedriver (the two always the same version; `./run tests` installs them).

One chromium runs for the whole session: starting it takes about a second, and most of the
suite's browser tests are short. The ``browser`` fixture hands it to each test reset: one tab on
about:blank, no cookies, no cache. Local storage is not cleared, but it is kept per origin and
each test's server has its own port, so no test sees another's. A browser that the reset
fails on (crashed, or stuck on a dialog) is replaced by a new one.

Selenium's calls block. A test whose server runs in its own event loop makes them through
``in_browser`` (a thread), or the server could not answer the browser while the test waits.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import ParamSpec, TypeVar

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.remote.webelement import WebElement

ROOT = Path(__file__).parents[2]
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
#: The window's outer size: headless chromium keeps 143 px of its height, the page gets 1400x857.
WINDOW = (1400, 1000)

P = ParamSpec("P")
T = TypeVar("T")


def start_chromium() -> webdriver.Chrome:
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.fail(
            f"{CHROMIUM} and {CHROMEDRIVER} are needed: `./run tests` installs them "
            "(apt-get install chromium chromium-driver)"
        )
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    options.add_argument("--headless")
    options.add_argument(f"--window-size={WINDOW[0]},{WINDOW[1]}")
    # Chromium's sandbox refuses to run as root, and the tests run as root in CI.
    options.add_argument("--no-sandbox")
    # /dev/shm is 64 MB in a default Docker container: too small, and chromium's tabs crash.
    options.add_argument("--disable-dev-shm-usage")
    # Debian's chromedriver by path: no Selenium Manager lookup, which may go to the network.
    return webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))


def reset(driver: webdriver.Chrome) -> None:
    """Back to one tab on about:blank, at the fixture's size, with no cookies or cache."""
    for handle in driver.window_handles[1:]:
        driver.switch_to.window(handle)
        driver.close()
    driver.switch_to.window(driver.window_handles[0])
    driver.get("about:blank")
    driver.set_window_size(*WINDOW)
    # Every origin's cookies: driver.delete_all_cookies() clears only the current page's.
    driver.execute_cdp_cmd("Network.clearBrowserCookies", {})
    driver.execute_cdp_cmd("Network.clearBrowserCache", {})


@pytest.fixture(scope="session")
def chromium_session() -> Iterator[list[webdriver.Chrome]]:
    """The session's browser, in a list so that ``browser`` can replace a broken one."""
    drivers = [start_chromium()]
    yield drivers
    drivers[0].quit()


@pytest.fixture
def browser(chromium_session: list[webdriver.Chrome]) -> webdriver.Chrome:
    """The session's headless chromium, reset for this test (see the module's docstring)."""
    try:
        reset(chromium_session[0])
    # Any error: a crashed chromium is a WebDriverException, a dead chromedriver urllib3's.
    except Exception:
        with contextlib.suppress(Exception):  # already gone: only the new one matters
            chromium_session[0].quit()
        chromium_session[0] = start_chromium()
    return chromium_session[0]


async def in_browser(fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """``fn(*args, **kwargs)`` in a thread: Selenium blocks, and the event loop has to keep
    serving the pages the browser asks for meanwhile."""
    return await asyncio.to_thread(fn, *args, **kwargs)


def screenshot_path(name: str) -> Path:
    """``name``.png in $QP_SCREENSHOTS, by default build/screenshots/ in the repository."""
    folder = Path(os.environ.get("QP_SCREENSHOTS") or ROOT / "build" / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{name.removesuffix('.png')}.png"


def save_screenshot(driver: webdriver.Chrome, name: str) -> Path:
    """The whole page as a PNG, below the window's bottom too; returns the file's path."""
    # Through the DevTools protocol: Selenium's own screenshot stops at the window's bottom.
    shot = driver.execute_cdp_cmd(
        "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True}
    )
    path = screenshot_path(name)
    path.write_bytes(base64.b64decode(shot["data"]))
    return path


def save_element_screenshot(driver: webdriver.Chrome, element: WebElement, name: str) -> Path:
    """One element (a panel, say) as a PNG; returns the file's path. ``driver`` is unused, but
    keeps the signature beside ``save_screenshot``'s."""
    path = screenshot_path(name)
    if not element.screenshot(str(path)):
        raise AssertionError(f"no screenshot of {element.tag_name} written to {path}")
    return path
