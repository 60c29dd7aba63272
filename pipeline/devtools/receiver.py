"""A local webhook receiver: the demo prints what it gets, the tests assert on it."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from types import TracebackType

from aiohttp import web


@dataclass(frozen=True)
class ReceivedWebhook:
    """One request as the receiver saw it."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    received_at: float


@dataclass
class WebhookReceiver:
    """An aiohttp server on loopback that records every request and answers ``status``.

    ``responder`` may choose the answer per request (tests use it to fail on purpose).
    """

    host: str = "127.0.0.1"
    port: int = 0
    status: int = 200
    on_request: Callable[[ReceivedWebhook], None] | None = None
    responder: (
        Callable[[ReceivedWebhook], web.StreamResponse | Awaitable[web.StreamResponse]] | None
    ) = None
    received: list[ReceivedWebhook] = field(default_factory=list)
    _runner: web.AppRunner | None = None
    _arrived: asyncio.Condition | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> None:
        """Binds the port (a free one when 0) and starts serving."""
        self._arrived = asyncio.Condition()
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port).start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        """Stops serving; idempotent."""
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def __aenter__(self) -> WebhookReceiver:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        loop = asyncio.get_running_loop()
        received = ReceivedWebhook(
            method=request.method,
            path=request.path_qs,
            headers=dict(request.headers),
            body=await request.read(),
            received_at=loop.time(),
        )
        self.received.append(received)
        if self.on_request is not None:
            self.on_request(received)
        assert self._arrived is not None
        async with self._arrived:
            self._arrived.notify_all()
        if self.responder is not None:
            answer = self.responder(received)
            # An async responder can hold the answer back (tests use it for timeouts).
            return await answer if inspect.isawaitable(answer) else answer
        return web.Response(status=self.status)

    async def wait_for(
        self,
        count: int,
        timeout: float,
        where: Callable[[ReceivedWebhook], bool] | None = None,
    ) -> list[ReceivedWebhook]:
        """Wait until at least ``count`` requests (those matching ``where``, if given) arrived;
        return them. TimeoutError after ``timeout``."""
        assert self._arrived is not None, "start() the receiver first"

        def matching() -> list[ReceivedWebhook]:
            return [r for r in self.received if where is None or where(r)]

        def enough() -> bool:
            # Counting without a filter is O(1): benchmarks wait for tens of thousands.
            if where is None:
                return len(self.received) >= count
            return len(matching()) >= count

        async with asyncio.timeout(timeout), self._arrived:
            await self._arrived.wait_for(enough)
        return matching()


async def print_webhooks(host: str, port: int) -> None:
    """Serve until Ctrl-C, printing each webhook's path and body on a line."""
    done = asyncio.Event()

    def show(received: ReceivedWebhook) -> None:
        print(received.method, received.path, received.body.decode(errors="replace"), flush=True)

    async with WebhookReceiver(host=host, port=port, on_request=show) as receiver:
        print(f"listening on {receiver.url}", flush=True)
        await done.wait()  # until Ctrl-C cancels the run


def main(argv: list[str] | None = None) -> None:
    import argparse
    import contextlib

    parser = argparse.ArgumentParser(
        prog="python -m pipeline.devtools.receiver",
        description="A local webhook receiver that answers 200 and prints what it gets.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(print_webhooks(args.host, args.port))


if __name__ == "__main__":
    main()
