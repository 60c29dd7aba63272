"""The ops page on real workers and a real broker: sign-in and its cookie, CSRF, and what each
panel shows of a scripted run across a group of two workers, down to a redrive that delivers a
dead letter again with its first webhook-id."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson
import pytest

from pipeline.devtools.local import free_port
from tests.integration.conftest import poll
from tests.integration.ops_scenario import (
    EXPECTED_KEY_TRIGGERS,
    KEYS,
    REFUSED,
    TOKEN,
    Refusing,
    load,
    ops_config,
)
from tests.integration.test_http_api import until_group_stable


class Page:
    """One answer of the ops page, read."""

    def __init__(self, status: int, text: str, headers: Any) -> None:
        self.status = status
        self.text = text
        self.headers = headers

    def csrf(self) -> str:
        match = re.search(r'name="csrf" value="([^"]+)"', self.text)
        assert match, "the page has no form with a CSRF token"
        return match[1]

    def section(self, section_id: str) -> str:
        match = re.search(rf'<section id="{section_id}".*?</section>', self.text, re.S)
        assert match, f"no {section_id} panel"
        return match[0]


class Browser:
    """A client that keeps the session cookie the way a browser would, never following
    redirects (the tests look at each)."""

    def __init__(self, session: aiohttp.ClientSession, base: str) -> None:
        self._session = session
        self.base = base
        self.cookie: str | None = None

    async def call(self, method: str, path: str, **kwargs: Any) -> Page:
        headers = dict(kwargs.pop("headers", {}))
        if self.cookie is not None:
            headers["Cookie"] = f"qp_ops={self.cookie}"
        async with self._session.request(
            method, self.base + path, headers=headers, allow_redirects=False, **kwargs
        ) as response:
            page = Page(response.status, await response.text(), response.headers)
        cookie = page.headers.get("Set-Cookie")
        if cookie is not None:
            self.cookie = cookie.split(";")[0].split("=", 1)[1] or None
        return page

    async def get(self, path: str) -> Page:
        return await self.call("GET", path)

    async def post(self, path: str, form: dict[str, Any], **headers: str) -> Page:
        return await self.call("POST", path, data=form, headers=headers)

    async def sign_in(self) -> None:
        signed = await self.post("/ops/login", {"token": TOKEN})
        assert signed.status == 303
        assert signed.headers["Location"] == "/ops"


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        yield session


async def until_page(browser: Browser, path: str, shows: Any, timeout: float = 90) -> Page:
    """GET ``path`` until ``shows(page)``; fail with the last page after ``timeout``."""
    last: list[Page] = []

    async def shown() -> Page | None:
        page = await browser.get(path)
        last[:] = [page]
        return page if page.status == 200 and shows(page) else None

    try:
        page: Page = await poll(shown, timeout)
    except AssertionError:
        seen = last[0].text[-3000:] if last else None
        raise AssertionError(f"{path} did not show it in {timeout}s: {seen}") from None
    return page


async def test_sign_in_sets_a_strict_http_only_cookie_and_forms_need_their_csrf_token(
    make_config, topics_of, start_worker, receiver, http
):
    config = ops_config(make_config, receiver)
    await topics_of(config)
    worker = await start_worker(config)
    browser = Browser(http, worker.web_url)

    # No cookie: every page sends the browser to the sign-in form.
    for path in ("/ops", "/ops/dlq", "/ops/keys/anything", "/ops/orgs/anything"):
        page = await browser.get(path)
        assert (page.status, page.headers["Location"]) == (303, "/ops/login"), path
    form = await browser.get("/ops/login")
    assert form.status == 200
    assert 'name="token"' in form.text
    assert 'type="password"' in form.text

    wrong = await browser.post("/ops/login", {"token": "not-the-token"})
    assert wrong.status == 401
    assert browser.cookie is None
    # A made-up or tampered cookie is no session.
    browser.cookie = "v1.1700000000.abc.def"
    assert (await browser.get("/ops")).status == 303
    browser.cookie = None

    signed = await browser.post("/ops/login", {"token": TOKEN})
    assert signed.status == 303
    assert signed.headers["Location"] == "/ops"
    attributes = {part.strip().split("=")[0] for part in signed.headers["Set-Cookie"].split(";")}
    assert {"HttpOnly", "SameSite", "Path", "Max-Age"} <= attributes
    assert "SameSite=Strict" in signed.headers["Set-Cookie"]
    assert "Path=/ops" in signed.headers["Set-Cookie"]
    overview = await browser.get("/ops")
    assert overview.status == 200
    assert overview.headers["Content-Type"].startswith("text/html")
    assert TOKEN not in overview.text
    csrf = overview.csrf()

    # Forms that change something: refused without the token, with another session's, or
    # from another site's page; accepted with it.
    assert (await browser.post("/ops/dlq/redrive", {"ref": "0:0"})).status == 403
    assert (await browser.post("/ops/dlq/redrive", {"ref": "0:0", "csrf": "x" * 43})).status == 403
    foreign = await browser.post(
        "/ops/dlq/redrive", {"ref": "0:0", "csrf": csrf}, Origin="http://evil.example"
    )
    assert foreign.status == 403
    accepted = await browser.post("/ops/dlq/redrive", {"ref": "0:0", "csrf": csrf})
    assert accepted.status == 303
    assert accepted.headers["Location"].startswith("/ops/dlq?")

    # The other workers' snapshot route takes the bearer token, not the cookie.
    assert (await browser.get("/ops/worker.json")).status == 401
    async with http.get(
        worker.web_url + "/ops/worker.json", headers={"Authorization": f"Bearer {TOKEN}"}
    ) as answer:
        assert answer.status == 200
        assert orjson.loads(await answer.read())["worker"]

    signed_out = await browser.post("/ops/logout", {"csrf": csrf})
    assert signed_out.status == 303
    assert browser.cookie is None
    assert (await browser.get("/ops")).status == 303


async def test_the_panels_show_the_whole_group_and_a_redrive_delivers_the_letter_again(
    make_config, cli, topics_of, start_worker, receiver, http, tmp_path
):
    refusing = Refusing()
    receiver.responder = refusing
    config = ops_config(make_config, receiver)  # 2 partitions: each worker holds one
    settings = await topics_of(config)
    first = await start_worker(config, name="first")
    second = await start_worker(
        {
            **config,
            "data_dir": str(tmp_path / "second"),
            "web": {"port": free_port(), "token": TOKEN},
        },
        name="second",
    )
    await until_group_stable(settings.kafka.bootstrap_servers, settings.app_id, members=2)
    await load(cli, settings, config)
    delivered = len(EXPECTED_KEY_TRIGGERS) - sum(key == REFUSED for key, _ in EXPECTED_KEY_TRIGGERS)
    await receiver.wait_for(
        delivered, timeout=90, where=lambda r: REFUSED.encode() not in r.body and b'"key"' in r.body
    )

    browser = Browser(http, first.web_url)
    await browser.sign_in()

    def endpoint_numbers(page: Page) -> list[int]:
        """delivered, retrying, dead-lettered, in flight: the receiver's row."""
        row = re.search(
            rf'<tr data-endpoint="{re.escape(receiver.url)}">.*?</tr>',
            page.section("endpoints"),
            re.S,
        )
        found = re.findall(r'class="num">([\d,]+)<', row[0]) if row else []
        return [int(n.replace(",", "")) for n in found]

    def settled(page: Page) -> bool:
        """Every panel has caught up with the load (org usage comes through the partials,
        outcomes once each is durable): then what they show is final."""
        numbers = endpoint_numbers(page)
        return (
            page.section("nearest-keys").count("<tr>") == 1 + len(KEYS)
            and "52.5%" in page.section("nearest-orgs")
            and "ops-org-b" in page.section("nearest-orgs")
            and "outcome-dead_lettered" in page.section("triggers")
            and bool(numbers)
            and numbers[0] >= delivered
            and numbers[2] == len(refusing.refused)
        )

    overview = await until_page(browser, "/ops", settled)

    # Nearest quota: every key of both workers, highest share first, masked.
    keys = overview.section("nearest-keys")
    shown = re.findall(r"<code>…(\w{4})</code>", keys)
    assert shown == ["0001", "0002", "0003", "0004"]
    assert "90.0%" in keys
    assert "60.0%" in keys
    assert "55.0%" in keys
    assert "10.0%" in keys
    for key in KEYS:
        assert key not in overview.text, "a raw key on the page"
    orgs = overview.section("nearest-orgs")
    assert orgs.index("ops-org-a") < orgs.index("ops-org-b")
    assert "52.5%" in orgs

    # Latest triggers: each with its delivery outcome at the monitor webhook.
    triggers = overview.section("triggers")
    assert triggers.count("outcome-delivered") >= delivered
    assert "outcome-dead_lettered" in triggers
    # Endpoints: the receiver, with what was delivered and dead-lettered there.
    delivered_there, retrying, dead, in_flight = endpoint_numbers(overview)
    assert delivered_there >= delivered
    assert (retrying, dead, in_flight) == (0, len(refusing.refused), 0)
    assert 'class="ok">closed' in overview.section("endpoints")
    # Lag and agents, for both workers.
    flow = overview.section("flow")
    assert first.web_url in flow
    assert second.web_url in flow
    assert settings.topics.requests in flow
    assert "ago" in flow

    # Dead letters: the refused key's, filtered, then redriven once the endpoint accepts.
    letters = await until_page(
        browser, "/ops/dlq?status=4xx", lambda page: page.section("dlq").count("data-letter=") >= 1
    )
    assert REFUSED not in letters.text
    refs = re.findall(r'data-letter="([^"]+)" data-event="([^"]+)"', letters.text)
    assert len(refs) == len(refusing.refused)
    none_match = await browser.get("/ops/dlq?status=5xx")
    assert "data-letter=" not in none_match.section("dlq")
    refusing.refusing = False
    before = len(receiver.received)
    ref, event_id = refs[0]
    redriven = await browser.post("/ops/dlq/redrive", {"only": ref, "csrf": letters.csrf()})
    assert redriven.status == 303
    assert "redriven=1" in redriven.headers["Location"]
    [again] = await receiver.wait_for(
        1, timeout=60, where=lambda r: receiver.received.index(r) >= before
    )
    assert again.headers["webhook-id"] == event_id
    assert REFUSED.encode() in again.body
    after = await browser.get(redriven.headers["Location"])
    assert "Queued 1 deliveries" in after.text

    # A key's own view, reached by searching for it: the one URL with the raw key.
    found = await browser.post(
        "/ops/search", {"kind": "key", "subject": "ops-key-hot-0001", "csrf": letters.csrf()}
    )
    assert found.headers["Location"] == "/ops/keys/" + quote("ops-key-hot-0001", safe="")
    for worker in (first, second):  # whichever worker holds it answers
        other = Browser(http, worker.web_url)
        other.cookie = browser.cookie  # one session for the whole group
        detail = await other.get(found.headers["Location"])
        assert detail.status == 200
        assert "90 of 100" in detail.text
        chart = detail.section("chart")
        assert "<svg" in chart
        assert "<polyline" in chart
    org = await browser.get("/ops/orgs/ops-org-a")
    assert org.status == 200
    assert "210 of 400" in org.text
    assert (await browser.get("/ops/keys/no-such-key")).status == 404
