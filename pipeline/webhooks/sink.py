"""The webhook channel: one aiohttp ClientSession, keep-alive, no redirects, bounded time, and
targets checked against the SSRF guard on the address they resolve to."""

from __future__ import annotations

import functools
import time
from collections.abc import Mapping, Sequence
from types import TracebackType

import aiohttp

from pipeline.delivery.outcomes import classify_status
from pipeline.errors import RetriableDeliveryError
from pipeline.webhooks.requests import WebhookRequest, attempt_headers, secrets_for
from pipeline.webhooks.ssrf import check_url, guarded_connector, parse_networks, refusal_of


class WebhookSink:
    """Sends webhook requests; :meth:`send` returns on 2xx and raises a DeliveryError otherwise."""

    def __init__(
        self,
        *,
        timeout: float,
        connect_timeout: float,
        signing_secrets: Sequence[str] = (),
        target_signing_secrets: Mapping[str, Sequence[str]] | None = None,
        concurrency: int = 64,
        per_endpoint_concurrency: int = 8,
        allow_networks: Sequence[str] = (),
    ) -> None:
        self._timeout = aiohttp.ClientTimeout(total=timeout, connect=connect_timeout)
        self._signing_secrets = tuple(signing_secrets)
        self._target_signing_secrets = dict(target_signing_secrets or {})
        self._concurrency = concurrency
        self._per_endpoint_concurrency = per_endpoint_concurrency
        self._allowed = parse_networks(allow_networks)
        # Targets repeat (the monitor's, each org's): judge each URL once, not on every send.
        # A refusal raises, so it is never cached.
        self._check_url = functools.lru_cache(maxsize=4096)(
            functools.partial(check_url, allowed=self._allowed)
        )
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        """Called once before the first send: opens the connection pool."""
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=self._timeout,
                connector=guarded_connector(
                    self._allowed,
                    limit=self._concurrency,
                    limit_per_host=self._per_endpoint_concurrency,
                ),
                # Proxies from the environment would make the guard check the proxy's address.
                trust_env=False,
            )

    async def stop(self) -> None:
        """Closes the pool; idempotent."""
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    async def __aenter__(self) -> WebhookSink:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def send(self, request: WebhookRequest) -> int:
        """One attempt. Returns the 2xx status; raises Retriable/PermanentDeliveryError."""
        if self._session is None:
            raise RuntimeError("WebhookSink.send called before start()")
        # IP literals never reach the resolver: check them (and the scheme) here.
        self._check_url(request.url)
        now = time.time()
        secrets = secrets_for(request.url, self._signing_secrets, self._target_signing_secrets)
        headers = attempt_headers(request, now=now, signing_secrets=secrets)
        try:
            async with self._session.request(
                request.method,
                request.url,
                data=request.body,
                headers=headers,
                allow_redirects=False,
            ) as response:
                await response.read()  # drain, so the connection is reused
                status = response.status
                retry_after = response.headers.get("Retry-After")
        except TimeoutError as exc:
            raise RetriableDeliveryError("timed out") from exc
        except aiohttp.ClientError as exc:
            if (refused := refusal_of(exc)) is not None:
                raise refused from exc
            raise RetriableDeliveryError(f"connection failed: {exc}") from exc
        error = classify_status(status, retry_after=retry_after, now=time.time())
        if error is not None:
            raise error
        return status
