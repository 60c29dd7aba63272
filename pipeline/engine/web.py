"""Pages on the worker's web port (faust's web server, aiohttp underneath), for the stages:
handlers take a :class:`WebRequest` and return a :class:`Reply`; reads of a table can be
forwarded to the worker that holds the key (faust's router); and records published from a
request are sent with a bound on the wait.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from http.cookies import CookieError, SimpleCookie
from typing import Any, NamedTuple, cast

import orjson
from aiokafka.errors import KafkaError, MessageSizeTooLargeError
from faust.exceptions import FaustError, SameNode
from faust.web import Request, View

from pipeline.engine.app import Engine, Table, Topic

#: Seconds a request waits on the broker (an acknowledgement, metadata) before answering 503.
#: faust's producer would wait 20 minutes; a dashboard would rather retry.
BROKER_TIMEOUT = 30.0


class Reply(NamedTuple):
    """What a page answers."""

    status: int
    body: bytes
    headers: Mapping[str, str] = {}

    @classmethod
    def json(
        cls, value: Any, *, status: int = 200, headers: Mapping[str, str] | None = None
    ) -> Reply:
        return cls(
            status, orjson.dumps(value), {"Content-Type": "application/json", **(headers or {})}
        )

    @classmethod
    def html(
        cls, text: str, *, status: int = 200, headers: Mapping[str, str] | None = None
    ) -> Reply:
        return cls(
            status,
            text.encode(),
            {
                "Content-Type": "text/html; charset=utf-8",
                # Pages that show operators' data: never cached, never framed.
                "Cache-Control": "no-store",
                "X-Frame-Options": "DENY",
                "X-Content-Type-Options": "nosniff",
                "Referrer-Policy": "same-origin",
                **(headers or {}),
            },
        )

    @classmethod
    def redirect(cls, location: str, *, headers: Mapping[str, str] | None = None) -> Reply:
        """303 See Other: after a form, the browser GETs ``location``."""
        return cls(303, b"", {"Location": location, "Cache-Control": "no-store", **(headers or {})})


class Forwarded:
    """The answer of the worker that holds a key, passed on as it came."""

    def __init__(self, response: Any) -> None:
        self.response = response


class BodyTooLarge(Exception):
    """The request body is over the page's limit."""


class NotReady(Exception):
    """The worker cannot tell yet which worker holds a key (no partitions assigned yet)."""


class PublishFailed(Exception):
    """The broker did not take a record; ``status`` and ``reason`` are the page's answer."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class WebRequest:
    """A request to a page: its headers, path parameters and body."""

    def __init__(self, request: Request, params: Mapping[str, str]) -> None:
        self._request = request
        self.params = params

    @property
    def headers(self) -> Mapping[str, str]:
        headers: Mapping[str, str] = self._request.headers
        return headers

    @property
    def query(self) -> Mapping[str, str]:
        """The query string's parameters (the first value of each)."""
        first: dict[str, str] = {}
        for name, value in cast(Any, self._request).query.items():
            first.setdefault(name, value)
        return first

    @property
    def secure(self) -> bool:
        """Whether the browser reached us over HTTPS (directly, or through a proxy that says
        so): a cookie set then is marked Secure."""
        forwarded = self.headers.get("X-Forwarded-Proto", "")
        return bool(cast(Any, self._request).secure) or forwarded.lower() == "https"

    def cookie(self, name: str) -> str | None:
        """One cookie's value; None when absent or when the header does not parse."""
        try:
            jar = SimpleCookie(self.headers.get("Cookie", ""))
        except CookieError:
            return None
        morsel = jar.get(name)
        return morsel.value if morsel is not None else None

    async def body(self, limit: int) -> bytes:
        """The body, read no further than ``limit`` bytes (faust's reader has no bound)."""
        request = cast(Any, self._request)
        if request.content_length is not None and request.content_length > limit:
            raise BodyTooLarge
        body = bytearray()
        async for chunk in request.content.iter_any():
            body += chunk
            if len(body) > limit:
                raise BodyTooLarge
        return bytes(body)


Handler = Callable[[WebRequest], Awaitable[Reply | Forwarded]]


def serve(engine: Engine, path: str, handlers: Mapping[str, Handler], *, name: str) -> None:
    """Answer ``path`` (``{param}`` parts allowed) with a handler per HTTP method (GET, PUT,
    POST, DELETE); the others are refused with 405 by the server."""

    async def answer(view: View, request: Request, method: str, params: Mapping[str, str]) -> Any:
        reply = await handlers[method](WebRequest(request, params))
        if isinstance(reply, Forwarded):
            return reply.response
        return view.bytes(reply.body, status=reply.status, headers=dict(reply.headers))

    methods = {method.lower(): _method(method, answer) for method in handlers}
    page = type(f"Page_{name.replace('-', '_')}", (View,), methods)
    engine.app.page(path, name=name)(page)


def _method(method: str, answer: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    async def call(view: View, request: Request, **params: str) -> Any:
        return await answer(view, request, method, params)

    return call


async def route_to_owner(
    engine: Engine, table: Table, key: str, request: WebRequest
) -> Forwarded | None:
    """The answer of the worker that holds ``key`` in ``table``, or None when this worker does
    (answer here). NotReady when the router cannot tell yet.

    faust's router forwards the request to the worker assigned the key's partition (the
    forwarded request keeps its headers, so the owner checks the token again). The key goes as
    bytes, not str: faust's table_route would hash the key as the changelog serializes it
    (JSON, in quotes), while records sit in the partition of their raw key bytes.
    """
    app = engine.app
    try:
        async with asyncio.timeout(BROKER_TIMEOUT):
            ready = await _router_ready(engine, table)
    except (KafkaError, TimeoutError) as exc:
        raise NotReady from exc
    if not ready:
        raise NotReady
    try:
        response = await app.router.route_req(table.name, key.encode(), app.web, request._request)
    except SameNode:
        return None
    return Forwarded(response)


async def _router_ready(engine: Engine, table: Table) -> bool:
    """True once faust's router can find the worker that holds a key of ``table``.

    The router hashes a key to its partition with the producer's metadata, which aiokafka keeps
    only for the topics the producer has sent to once it has sent anything: a changelog this
    worker never wrote to is missing, and the router fails with a TypeError. aiokafka's
    ``partitions_for`` fetches a missing topic's metadata and tracks the topic from then on
    (at once when it is known). faust's Producer does not hand out its aiokafka producer:
    ``_ensure_producer`` is the one way in.
    """
    app = engine.app
    faust_table = table.faust_table
    topic = faust_table.changelog_topic.get_topic_name()
    distribution = app.router.table_metadata(faust_table.name)
    if not any(partitions.get(topic) for partitions in distribution.values()):
        # No assignment yet. Asking for the topic's metadata now could even create it, before
        # faust does, with the broker's default partition count (auto.create.topics.enable).
        return False
    producer = cast(Any, app.producer)._ensure_producer()
    await producer.partitions_for(topic)
    return True


async def publish(topic: Topic, key: bytes, value: bytes | None) -> None:
    """Send a record and wait for the broker's acknowledgement, at most BROKER_TIMEOUT;
    PublishFailed says what to answer when it does not come."""
    try:
        async with asyncio.timeout(BROKER_TIMEOUT):
            await (await topic.send(key, value))
    except (KafkaError, FaustError, TimeoutError) as exc:
        raise publish_failure(exc) from exc


def publish_failure(exc: BaseException) -> PublishFailed:
    """What to answer for a record the broker did not take."""
    # faust wraps what aiokafka refuses before sending; the broker's own errors come bare.
    if isinstance(exc, MessageSizeTooLargeError) or isinstance(
        exc.__cause__, MessageSizeTooLargeError
    ):
        return PublishFailed(413, "the record is larger than the broker accepts")
    return PublishFailed(503, "the broker did not acknowledge the record; retry")
