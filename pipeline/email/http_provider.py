"""What the HTTP email providers share: one aiohttp ClientSession per sink, a deadline per call,
and the reading of an answer into a delivery outcome.

A provider says only how a request looks (:meth:`HttpEmailSink.prepare`) and where its error
bodies keep the message (:meth:`HttpEmailSink.error_detail`); neither does I/O, nor does
:meth:`HttpEmailSink.outcome`, which providers with their own conventions (Mandrill, SES) extend.
"""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, ClassVar, Self

import aiohttp
import orjson

from pipeline.delivery.outcomes import classify_status
from pipeline.email.message import EmailRequest
from pipeline.errors import DeliveryError, RetriableDeliveryError

logger = logging.getLogger(__name__)

#: Longest provider message an error carries: enough to act on, small in a dead letter.
MAX_DETAIL = 300


@dataclass(frozen=True, slots=True)
class ProviderCall:
    """One POST to a provider API, ready to go."""

    url: str
    headers: Mapping[str, str]
    body: bytes


@dataclass(frozen=True, slots=True)
class ProviderAnswer:
    """What the provider answered (headers case-insensitive, as aiohttp gives them)."""

    status: int
    headers: Mapping[str, str]
    body: bytes


def json_body(body: bytes) -> Any:
    """The body as JSON, or None when it is not JSON (providers answer HTML on some errors)."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return None


def excerpt(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_DETAIL else text[: MAX_DETAIL - 1] + "…"


def _restated(error: DeliveryError, message: str) -> DeliveryError:
    """The same outcome (class, status, retry_after) with a message that says more."""
    if isinstance(error, RetriableDeliveryError):
        return RetriableDeliveryError(message, status=error.status, retry_after=error.retry_after)
    return type(error)(message, status=error.status)


class HttpEmailSink(ABC):
    """Sends one email per POST; :meth:`send` returns when the provider took the message."""

    #: The provider's ``email_backend.code``, which errors and logs name it by.
    code: ClassVar[str]

    def __init__(self, *, base_url: str, timeout: float) -> None:
        self.base_url = base_url.rstrip("/")
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        """Called once before the first send: opens the connection pool."""
        if self._session is None:
            # No proxies from the environment: credentials go to the provider and nowhere else.
            self._session = aiohttp.ClientSession(timeout=self._timeout, trust_env=False)

    async def stop(self) -> None:
        """Closes the pool; idempotent."""
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def send(self, request: EmailRequest) -> None:
        """One attempt; raises RetriableDeliveryError or PermanentDeliveryError on failure."""
        if self._session is None:
            raise RuntimeError(f"{type(self).__name__}.send called before start()")
        call = self.prepare(request)
        try:
            async with self._session.post(
                call.url, data=call.body, headers=dict(call.headers), allow_redirects=False
            ) as response:
                answer = ProviderAnswer(response.status, response.headers, await response.read())
        except TimeoutError as exc:
            raise RetriableDeliveryError(f"{self.code}: timed out") from exc
        except aiohttp.ClientError as exc:
            raise RetriableDeliveryError(f"{self.code}: connection failed: {exc}") from exc
        error = self.outcome(answer, now=time.time())
        if error is None:
            return
        if self.account_problem(answer):
            # Every email fails until someone acts: say so loudly (status only, never the body).
            logger.error(
                "email provider refused our account provider=%s status=%s", self.code, answer.status
            )
        raise error

    @abstractmethod
    def prepare(self, request: EmailRequest) -> ProviderCall:
        """The provider call for one email; PermanentDeliveryError for an unsendable one."""

    @abstractmethod
    def error_detail(self, answer: ProviderAnswer) -> str:
        """The provider's own words for an error answer."""

    def outcome(self, answer: ProviderAnswer, *, now: float) -> DeliveryError | None:
        """None when the provider took the message; else the error: 408, 429 (with its
        Retry-After) and 5xx are retriable, other statuses permanent."""
        retry_after = answer.headers.get("Retry-After")
        error = classify_status(answer.status, retry_after=retry_after, now=now)
        if error is None:
            return None
        return _restated(
            error, f"{self.code} answered {answer.status}: {self.error_detail(answer)}"
        )

    def account_problem(self, answer: ProviderAnswer) -> bool:
        """Whether the answer says our credentials or account are unusable."""
        return answer.status in {401, 403}
