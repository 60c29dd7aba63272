"""The browser setup (tests/integration/browser.py) end to end: headless chromium loads a page
from a real aiohttp server, keeps its cookie, submits its form, and is screenshotted."""

from __future__ import annotations

import html
import struct
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.wait import WebDriverWait

from tests.integration.browser import WINDOW, in_browser, save_element_screenshot, save_screenshot

FORM = """<!doctype html>
<title>Sign in</title>
<form method="post" action="/greet">
  <label>Name <input name="name"></label>
  <button type="submit">Send</button>
</form>
<!-- Taller than the window: the full-page screenshot has to reach below it. -->
<div style="height: 2000px; background: linear-gradient(white, steelblue)"></div>
"""


async def form(request: web.Request) -> web.Response:
    response = web.Response(text=FORM, content_type="text/html")
    response.set_cookie("visitor", "v-42", httponly=True, samesite="Strict")
    return response


async def greet(request: web.Request) -> web.Response:
    name = (await request.post()).get("name", "")
    visitor = request.cookies.get("visitor", "none")
    text = f"Hello, {html.escape(str(name))}! (visitor {html.escape(visitor)})"
    return web.Response(
        text=f'<!doctype html><title>Hello</title><p id="result">{text}</p>',
        content_type="text/html",
    )


@pytest.fixture
async def site() -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_get("/", form)
    app.router.add_post("/greet", greet)
    runner = web.AppRunner(app)
    await runner.setup()
    server = web.TCPSite(runner, "127.0.0.1", 0)  # a free port
    await server.start()
    host, port = runner.addresses[0][:2]
    yield f"http://{host}:{port}"
    await runner.cleanup()


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk; fails if the file is not a PNG."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


async def test_the_browser_submits_a_form_with_its_cookie_and_takes_screenshots(
    browser: webdriver.Chrome,
    site: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("QP_SCREENSHOTS", str(tmp_path))
    wait = WebDriverWait(browser, 10)

    def sign_in() -> str:
        browser.get(site)
        field = wait.until(EC.element_to_be_clickable((By.NAME, "name")))
        assert (browser.get_cookie("visitor") or {}).get("value") == "v-42"
        field.send_keys("Ada <Lovelace>")
        browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        wait.until(EC.text_to_be_present_in_element((By.ID, "result"), "Hello"))
        return str(browser.find_element(By.ID, "result").text)

    def screenshots() -> tuple[Path, Path]:
        browser.get(site)
        form = wait.until(EC.visibility_of_element_located((By.TAG_NAME, "form")))
        return save_element_screenshot(browser, form, "form"), save_screenshot(browser, "page")

    assert await in_browser(sign_in) == "Hello, Ada <Lovelace>! (visitor v-42)"
    panel, page = await in_browser(screenshots)

    assert (panel, page) == (tmp_path / "form.png", tmp_path / "page.png")
    panel_width, panel_height = png_size(panel)
    page_width, page_height = png_size(page)
    assert 0 < panel_width <= page_width
    assert 0 < panel_height < page_height
    assert page_height > WINDOW[1]  # the whole page, not only the window's part
