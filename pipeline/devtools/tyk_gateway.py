"""A local stand-in of Tyk Gateway's key API, for the tests and the bench of `sessions sync`.

It answers as Tyk documents and does (TykTechnologies/tyk ``gateway/api.go``):
``x-tyk-authorization`` must be the secret (else 403 ``Attempted administrative access with
invalid or missing key!``); ``GET /tyk/keys`` lists the keys (the hashes when ``hash_keys``, and
then only with ``hashed_listing``, else 404); ``GET|PUT|DELETE /tyk/keys/{key}``
(``?hashed=true`` for a hash; 400 when keys are not hashed; 404 ``Key not found``);
``GET /tyk/org/keys`` (404 when there are no org sessions, or with ``org_listing`` off, as in
RPC mode) and ``GET /tyk/org/keys/{org_id}`` (404 ``Org not found``); ``GET /hello``.

Sessions are held as their encoded answer, so a GET costs a dict lookup: a million of them
for the bench. ``python -m pipeline.devtools.tyk_gateway --port P --secret S --generate N``
runs it as a process of its own (the bench's second core).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import orjson
from aiohttp import web

JSON = "application/json"


def error(status: int, message: str) -> web.Response:
    # Tyk's apiError: {"status":"error","message":…}, written by a json.Encoder (a newline).
    body = orjson.dumps({"status": "error", "message": message}) + b"\n"
    return web.Response(status=status, body=body, content_type=JSON)


def encoded(value: Any) -> bytes:
    """``value`` as JSON, in bytes of its own length: orjson's keep the buffer they were
    written in (8 KB a session), 8 GB for a million held sessions."""
    return bytes(memoryview(orjson.dumps(value)))


def stand_in_hash(key: str) -> str:
    """The stored id of a key on a hashing gateway. Tyk uses murmur (32, 64 or 128 bits, by
    token); any stable hash serves a stand-in."""
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def generated_key(index: int) -> str:
    """A key as Tyk makes legacy ones: the org id, then 32 hex digits."""
    return f"{generated_org(index)}{index:032x}"


def generated_org(index: int) -> str:
    return f"org{index % 100:03d}"


def generated_session(index: int, quota_max: int = 10_000) -> dict[str, Any]:
    """A Tyk 5.12 session object (zero fields left out), with the fields that move on every
    request as well as those the pipeline reads."""
    return {
        "allowance": 1000,
        "rate": 1000,
        "per": 60,
        "quota_max": quota_max + (index % 10) * 1000,
        "quota_renews": 1_764_334_800,
        "quota_remaining": 9_000 - index % 9_000,
        "quota_renewal_rate": 3600,
        "access_rights": {"api1": {"api_id": "api1", "api_name": "Orders", "versions": ["v1"]}},
        "org_id": generated_org(index),
        "monitor": {"trigger_limits": [80, 50]},
        "meta_data": {"developer_email": f"dev{index}@example.com"},
        "alias": f"app-{index}",
        "last_updated": "1764331200",
        "date_created": "2025-11-28T12:00:00Z",
    }


class TykGatewayStandIn:
    """The stand-in as an aiohttp server on loopback; use ``async with``.

    Tests change what it holds with :meth:`put_session` and friends, and may watch it:
    ``requests`` counts session GETs, ``max_in_flight`` the most at once; ``latency`` holds
    each session GET that long (so that concurrency shows); ``after_listing`` runs once a key
    listing was answered (a key deleted there is gone by the time it is fetched).
    """

    def __init__(
        self,
        secret: str,
        *,
        hash_keys: bool = False,
        hashed_listing: bool = True,
        org_listing: bool = True,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.secret = secret.encode()
        self.hash_keys = hash_keys
        self.hashed_listing = hashed_listing
        self.org_listing = org_listing
        self.host = host
        self.port = port
        #: Stored id (the hash, when hashing) -> the encoded session.
        self.sessions: dict[str, bytes] = {}
        self.orgs: dict[str, bytes] = {}
        self.latency = 0.0
        self.after_listing: Callable[[], None] | None = None
        self.requests = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def stored_id(self, key: str) -> str:
        return stand_in_hash(key) if self.hash_keys else key

    def put_session(self, key: str, session: Mapping[str, Any]) -> None:
        self.sessions[self.stored_id(key)] = encoded(session)

    def delete_session(self, key: str) -> None:
        self.sessions.pop(self.stored_id(key), None)

    def put_org(self, org_id: str, session: Mapping[str, Any]) -> None:
        self.orgs[org_id] = encoded(session)

    def generate(self, count: int) -> None:
        """``count`` sessions of :func:`generated_session`, and an org session for each org."""
        for index in range(count):
            self.put_session(generated_key(index), generated_session(index))
        for index in range(min(count, 100)):
            org = {"org_id": generated_org(index), "quota_max": 10_000_000}
            self.put_org(generated_org(index), {**org, "quota_renewal_rate": 3600})

    def application(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/hello", self._hello)
        app.router.add_get("/tyk/keys", self._list_keys)
        app.router.add_get("/tyk/keys/", self._list_keys)
        app.router.add_route("*", "/tyk/keys/{key:.+}", self._key)
        app.router.add_get("/tyk/org/keys", self._list_orgs)
        app.router.add_get("/tyk/org/keys/", self._list_orgs)
        app.router.add_get("/tyk/org/keys/{org_id:.+}", self._org)
        return app

    async def start(self) -> None:
        self._runner = web.AppRunner(self.application(), access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port).start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def __aenter__(self) -> TykGatewayStandIn:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    def _refused(self, request: web.Request) -> web.Response | None:
        given = request.headers.get("x-tyk-authorization", "").encode()
        if hmac.compare_digest(given, self.secret):
            return None
        return error(403, "Attempted administrative access with invalid or missing key!")

    async def _hello(self, request: web.Request) -> web.Response:
        return web.Response(body=b'{"status":"pass"}\n', content_type=JSON)

    async def _list_keys(self, request: web.Request) -> web.Response:
        if refused := self._refused(request):
            return refused
        if self.hash_keys and not self.hashed_listing:
            message = "Hashed key listing is disabled in config (enable_hashed_keys_listing)"
            return error(404, message)
        body = orjson.dumps({"keys": list(self.sessions)})
        if self.after_listing is not None:
            self.after_listing()
        return web.Response(body=body, content_type=JSON)

    async def _key(self, request: web.Request) -> web.Response:
        if refused := self._refused(request):
            return refused
        key = request.match_info["key"]
        if request.query.get("hashed"):
            if not self.hash_keys:
                return error(400, "Key requested by hash but key hashing is not enabled")
            stored = key
        else:
            stored = self.stored_id(key)
        if request.method == "GET":
            return await self._get_session(stored)
        return await self._change_session(request, key, stored)

    async def _change_session(self, request: web.Request, key: str, stored: str) -> web.Response:
        if request.method in {"PUT", "POST"}:
            self.sessions[stored] = encoded(orjson.loads(await request.read()))
            action = "modified" if request.method == "PUT" else "added"
            return web.json_response({"key": key, "status": "ok", "action": action})
        if request.method == "DELETE":
            if self.sessions.pop(stored, None) is None:
                return error(404, "Key not found")
            return web.json_response({"key": key, "status": "ok", "action": "deleted"})
        return error(405, "Method not supported")

    async def _get_session(self, stored: str) -> web.Response:
        self.requests += 1
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.latency:
                await asyncio.sleep(self.latency)  # a slow gateway, for concurrency to show
            body = self.sessions.get(stored)
            if body is None:
                return error(404, "Key not found")
            return web.Response(body=body, content_type=JSON)
        finally:
            self.in_flight -= 1

    async def _list_orgs(self, request: web.Request) -> web.Response:
        if refused := self._refused(request):
            return refused
        if not self.org_listing or not self.orgs:
            return error(404, "ORG not found")
        return web.Response(body=orjson.dumps({"keys": list(self.orgs)}), content_type=JSON)

    async def _org(self, request: web.Request) -> web.Response:
        if refused := self._refused(request):
            return refused
        body = self.orgs.get(request.match_info["org_id"])
        if body is None:
            return error(404, "Org not found")
        return web.Response(body=body, content_type=JSON)


def load_file(path: Path) -> dict[str, Any]:
    loaded = orjson.loads(path.read_bytes())
    if not isinstance(loaded, dict):
        raise SystemExit(f"{path}: expected a JSON object of id to session")
    return loaded


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.devtools.tyk_gateway",
        description="A local stand-in of Tyk Gateway's key API (for tests and the bench).",
    )
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--secret", required=True, help="tyk.conf's secret")
    held = parser.add_mutually_exclusive_group()
    held.add_argument("--sessions", type=Path, help="a JSON object of key to session")
    held.add_argument("--generate", type=int, help="hold this many generated sessions")
    parser.add_argument("--orgs", type=Path, help="a JSON object of org id to org session")
    parser.add_argument("--hash-keys", action="store_true", help="as tyk.conf's hash_keys")
    parser.add_argument(
        "--no-hashed-listing", action="store_true", help="enable_hashed_keys_listing off"
    )
    args = parser.parse_args(argv)
    gateway = TykGatewayStandIn(
        args.secret,
        hash_keys=args.hash_keys,
        hashed_listing=not args.no_hashed_listing,
        host=args.host,
        port=args.port,
    )
    if args.generate:
        gateway.generate(args.generate)
    for key, session in load_file(args.sessions).items() if args.sessions else ():
        gateway.put_session(key, session)
    for org_id, org in load_file(args.orgs).items() if args.orgs else ():
        gateway.put_org(org_id, org)
    web.run_app(
        gateway.application(),
        host=args.host,
        port=args.port,
        access_log=None,
        print=lambda _: print(f"listening on http://{args.host}:{args.port}", flush=True),
    )


if __name__ == "__main__":
    main()
