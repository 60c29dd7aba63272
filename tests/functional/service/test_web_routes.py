"""Every route a worker's web port answers, served by a real aiohttp server on loopback: only
the documented ones exist, and each but the three probes needs the token."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from pipeline.config import Settings
from pipeline.service.web import OPEN_PAGES
from pipeline.service.worker import build_worker_pipeline

TOKEN = "web-token-for-routes"

#: The documented routes (docs/contract.md: the probes, the HTTP API, the ops page), with the
#: methods each takes.
DOCUMENTED = {
    "/ops": {"GET"},
    "/ops/login": {"GET", "POST"},
    "/ops/logout": {"POST"},
    "/ops/dlq": {"GET"},
    "/ops/dlq/redrive": {"POST"},
    "/ops/search": {"POST"},
    "/ops/keys/{key}": {"GET"},
    "/ops/orgs/{org}": {"GET"},
    "/ops/worker.json": {"GET"},
    "/healthz": {"GET"},
    "/readyz": {"GET"},
    "/metrics": {"GET"},
    "/events": {"POST"},
    "/sessions/{key}": {"PUT", "DELETE"},
    "/orgs/{org}": {"PUT", "DELETE"},
    "/quota/{key}": {"GET"},
    "/orgs/{org}/quota": {"GET"},
}

#: Pages faust serves unless told not to (its blueprints), and a few guesses.
FAUST_PAGES = [
    "/",
    "/router/",
    "/router/topics",
    "/table/",
    "/table/sessions/",
    "/table/sessions/some-key/",
    "/graph/",
    "/stats/",
    "/assignment/",
    "/performance/",
    "/favicon.ico",
]


@pytest.fixture
async def worker_web(tmp_path: Path) -> AsyncIterator[tuple[Any, TestServer]]:
    settings = Settings.model_validate(
        {"store": "memory", "data_dir": str(tmp_path), "web": {"token": TOKEN}}
    )
    pipeline = build_worker_pipeline(settings)
    web = pipeline.engine.app.web
    web.init_server()
    server = TestServer(web.web_app, host="127.0.0.1")
    await server.start_server()
    try:
        yield web, server
    finally:
        await server.close()


def served_routes(web: Any) -> dict[str, set[str]]:
    routes: dict[str, set[str]] = {}
    for route in web.web_app.router.routes():
        if route.method != "HEAD":  # aiohttp adds one beside every GET
            routes.setdefault(route.resource.canonical, set()).add(route.method)
    return routes


def concrete(path: str) -> str:
    return path.replace("{key}", "some-key").replace("{org}", "some-org")


async def test_only_documented_routes_are_served(worker_web) -> None:
    web, _ = worker_web

    routes = served_routes(web)

    assert {path: methods & DOCUMENTED.get(path, set()) for path, methods in routes.items()} == (
        DOCUMENTED
    )


def refused(path: str, method: str, status: int, location: str | None) -> bool:
    """Whether a request without the token (or the ops session) was turned away: 401, or, for
    the ops page's own pages, 303 to its sign-in form (whose GET is the one open ops page)."""
    if path == "/ops/login":
        return status == (200 if method == "GET" else 401)
    if path.startswith("/ops") and path != "/ops/worker.json":
        return status == 303 and location == "/ops/login"
    return status == 401


async def test_every_route_but_the_probes_refuses_a_request_without_the_token(worker_web) -> None:
    web, server = worker_web
    async with aiohttp.ClientSession() as session:
        for path, methods in served_routes(web).items():
            for method in methods:
                url = server.make_url(concrete(path))
                for headers in ({}, {"Authorization": "Bearer wrong"}):
                    async with session.request(
                        method, url, data=b"{}", headers=headers, allow_redirects=False
                    ) as response:
                        status, location = response.status, response.headers.get("Location")
                    if path in OPEN_PAGES:
                        # /readyz says 503 until the worker has its partitions.
                        assert status in {200, 503}, (method, path)
                    else:
                        assert refused(path, method, status, location), (method, path, status)


async def test_faust_pages_are_not_found(worker_web) -> None:
    _, server = worker_web
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with aiohttp.ClientSession() as session:
        for path in FAUST_PAGES:
            async with session.get(server.make_url(path), headers=headers) as response:
                assert response.status == 404, path


async def test_without_a_token_the_ops_page_is_off(tmp_path: Path) -> None:
    settings = Settings.model_validate({"store": "memory", "data_dir": str(tmp_path)})
    web = build_worker_pipeline(settings).engine.app.web
    web.init_server()
    server = TestServer(web.web_app, host="127.0.0.1")
    await server.start_server()
    try:
        async with aiohttp.ClientSession() as session:
            for method, path, form in (
                ("GET", "/ops/login", None),
                ("POST", "/ops/login", {"token": ""}),
                ("GET", "/ops", None),
            ):
                async with session.request(
                    method, server.make_url(path), data=form, allow_redirects=False
                ) as response:
                    assert response.status == 403, (method, path)
                    assert "web.token" in await response.text()
    finally:
        await server.close()
