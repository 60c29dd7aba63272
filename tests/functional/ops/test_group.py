"""pipeline.ops.group against real aiohttp servers on loopback: every worker's snapshot that
comes, and the workers that do not answer named with the reason."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from pydantic import SecretStr

from pipeline.devtools.local import free_port
from pipeline.ops import group
from pipeline.ops.group import SNAPSHOT_PATH, ask_group
from pipeline.service.api_rules import authorize

TOKEN = SecretStr("group-token-1234")
OWN_URL = "http://127.0.0.1:1"
OWN = {"worker": OWN_URL, "keys": [], "orgs": []}


class Peer:
    """A worker's web port: answers its snapshot as OpsPages.worker_json does, and keeps the
    Authorization header of every request."""

    def __init__(self, snapshot: dict[str, Any], token: SecretStr = TOKEN) -> None:
        self.snapshot = snapshot
        self.token = token
        self.authorizations: list[str | None] = []
        app = web.Application()
        app.router.add_get(SNAPSHOT_PATH, self.answer)
        self.server = TestServer(app, host="127.0.0.1")

    async def answer(self, request: web.Request) -> web.Response:
        header = request.headers.get("Authorization")
        self.authorizations.append(header)
        refusal = authorize(header, self.token)
        if refusal is not None:
            return web.json_response({"error": refusal.error}, status=refusal.status)
        return web.Response(body=orjson.dumps(self.snapshot), content_type="application/json")

    @property
    def url(self) -> str:
        return str(self.server.make_url("")).rstrip("/")


async def failing(request: web.Request) -> web.Response:
    return web.Response(status=500, text="Internal Server Error")


@pytest.fixture
async def good() -> AsyncIterator[Peer]:
    peer = Peer({"worker": "good", "keys": [{"ref": "r", "usage": 5}], "orgs": []})
    await peer.server.start_server()
    try:
        yield peer
    finally:
        await peer.server.close()


@pytest.fixture
async def broken() -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_get(SNAPSHOT_PATH, failing)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield str(server.make_url("")).rstrip("/")
    finally:
        await server.close()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


async def own() -> dict[str, Any]:
    return OWN


async def test_the_group_is_every_snapshot_that_came_and_the_workers_that_did_not(
    good: Peer, broken: str, session: aiohttp.ClientSession
) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    # The peers as the last rebalance knows them: this worker among them.
    peers = [broken, OWN_URL, good.url, closed]

    view = await ask_group(peers, OWN_URL, own, TOKEN, session)

    assert view.snapshots == [OWN, good.snapshot]
    assert view.missing == [(broken, "answered 500"), (closed, "unreachable")]


async def test_the_request_carries_the_bearer_token(
    good: Peer, session: aiohttp.ClientSession
) -> None:
    await ask_group([good.url], OWN_URL, own, TOKEN, session)

    assert good.authorizations == ["Bearer group-token-1234"]


async def test_a_worker_with_another_token_is_named_not_shown(
    session: aiohttp.ClientSession,
) -> None:
    other = Peer({"worker": "other"}, token=SecretStr("another-token-5678"))
    await other.server.start_server()
    url = other.url
    try:
        view = await ask_group([url], OWN_URL, own, TOKEN, session)
    finally:
        await other.server.close()

    assert view.snapshots == [OWN]
    assert view.missing == [(url, "answered 401")]
    assert other.authorizations == ["Bearer group-token-1234"]


async def test_this_worker_is_asked_directly_never_over_http(
    good: Peer, session: aiohttp.ClientSession
) -> None:
    view = await ask_group([good.url], good.url, own, TOKEN, session)

    assert view.snapshots == [OWN]
    assert view.missing == []
    assert good.authorizations == []


async def test_this_workers_own_failure_is_named_and_the_others_shown(
    good: Peer, session: aiohttp.ClientSession
) -> None:
    async def not_ready() -> dict[str, Any]:
        raise RuntimeError("no partitions yet")

    view = await ask_group([OWN_URL, good.url], OWN_URL, not_ready, TOKEN, session)

    assert view.snapshots == [good.snapshot]
    assert view.missing == [(OWN_URL, "no partitions yet")]


async def test_a_worker_that_does_not_answer_in_time_is_named(
    session: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(group, "ASK_WITHIN", 0.2)
    never = asyncio.Event()

    async def stuck(request: web.Request) -> web.Response:
        await never.wait()
        return web.Response()

    app = web.Application()
    app.router.add_get(SNAPSHOT_PATH, stuck)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    url = str(server.make_url("")).rstrip("/")
    try:
        view = await ask_group([url], OWN_URL, own, TOKEN, session)
    finally:
        never.set()
        await server.close()

    assert view.snapshots == [OWN]
    assert view.missing == [(url, "no answer within 0.2 s")]


async def test_without_peers_the_group_is_this_worker(session: aiohttp.ClientSession) -> None:
    view = await ask_group([], OWN_URL, own, TOKEN, session)

    assert view == ([OWN], [])
