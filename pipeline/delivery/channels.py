"""The channels a delivery job goes out on. Each turns a job into one attempt and names the
endpoint whose health and concurrency the attempt counts against."""

from __future__ import annotations

import functools
from typing import Protocol
from urllib.parse import urlsplit

from pipeline.delivery.jobs import DeliveryJob
from pipeline.email.factory import EmailSink
from pipeline.email.message import EmailRequest
from pipeline.webhooks.sink import WebhookSink


class Channel(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def endpoint(self, job: DeliveryJob) -> str:
        """Breakers and concurrency bounds are kept per endpoint."""
        ...

    async def send(self, job: DeliveryJob) -> int | None:
        """One attempt: the peer's success status if it has one; raises a DeliveryError."""
        ...


@functools.lru_cache(maxsize=4096)  # targets repeat; urlsplit on every attempt showed
def endpoint_of(url: str) -> str:
    """A webhook's endpoint is its scheme://host:port."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


class WebhookChannel:
    def __init__(self, sink: WebhookSink) -> None:
        self._sink = sink

    async def start(self) -> None:
        await self._sink.start()

    async def stop(self) -> None:
        await self._sink.stop()

    def endpoint(self, job: DeliveryJob) -> str:
        return endpoint_of(job.url)

    async def send(self, job: DeliveryJob) -> int | None:
        return await self._sink.send(job.request())


class EmailChannel:
    """Emails through the configured backend; the backend is one endpoint for the breaker."""

    def __init__(self, sink: EmailSink, provider: str) -> None:
        self._sink = sink
        self._endpoint = f"email:{provider}"

    async def start(self) -> None:
        await self._sink.start()

    async def stop(self) -> None:
        await self._sink.stop()

    def endpoint(self, job: DeliveryJob) -> str:
        return self._endpoint

    async def send(self, job: DeliveryJob) -> int | None:
        await self._sink.send(EmailRequest.from_json(job.body))
        return None
