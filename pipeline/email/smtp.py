"""The SMTP email sink: a small pool of aiosmtplib connections, TLS whenever credentials travel,
and an overall deadline per message (aiosmtplib's own timeout is per socket operation)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from dataclasses import dataclass
from types import TracebackType
from typing import Literal
from urllib.parse import urlsplit

import aiosmtplib

from pipeline.email.message import EmailRequest, addresses, build_message
from pipeline.errors import (
    ConfigError,
    DeliveryError,
    PermanentDeliveryError,
    RetriableDeliveryError,
)

logger = logging.getLogger(__name__)

DEFAULT_POOL_SIZE = 12
#: Servers drop idle clients (often after a minute); an older idle connection is closed rather
#: than reused, so a message is not failed by a disconnect nobody noticed yet.
MAX_IDLE_SECONDS = 30.0
IMPLICIT_TLS_PORT = 465

TlsMode = Literal["implicit", "required", "opportunistic"]


def parse_smtp_address(value: str) -> tuple[str, int]:
    """Tyk's ``SMTPAddress``, "host:port" (an IPv6 host in brackets), as (host, port)."""
    try:
        parts = urlsplit("//" + value.strip())
        host, port = parts.hostname, parts.port
    except ValueError as exc:
        raise ConfigError(f"email_backend.settings.SMTPAddress {value!r}: {exc}") from exc
    if not host or port is None or parts.path or parts.username:
        raise ConfigError(f"email_backend.settings.SMTPAddress {value!r} is not host:port")
    return host, port


def tls_mode(port: int, *, with_credentials: bool) -> TlsMode:
    """Implicit TLS on 465; STARTTLS required when a password would travel; else when offered."""
    if port == IMPLICIT_TLS_PORT:
        return "implicit"
    return "required" if with_credentials else "opportunistic"


def _by_reply_code(code: int, message: str) -> DeliveryError:
    if 400 <= code < 500:
        return RetriableDeliveryError(message, status=code)
    if 500 <= code < 600:
        return PermanentDeliveryError(message, status=code)
    return RetriableDeliveryError(message)  # no usable reply: treat as a broken connection


def classify_smtp_error(exc: Exception) -> DeliveryError:
    """What a failed SMTP attempt means: 4xx, disconnects and timeouts are worth a retry; 5xx,
    refused recipients and a server lacking what we require (STARTTLS, AUTH) are not."""
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        refused = exc.recipients
        detail = "; ".join(f"{r.recipient}: {r.code} {r.message}" for r in refused)
        code = refused[0].code if refused else 550
        return _by_reply_code(code, f"recipient refused: {detail}")
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return _by_reply_code(exc.code, f"SMTP server answered {exc.code} {exc.message}")
    if isinstance(exc, TimeoutError):
        return RetriableDeliveryError(f"SMTP timed out: {exc}" if str(exc) else "SMTP timed out")
    if isinstance(exc, OSError):  # refused, reset, disconnected, TLS failures
        return RetriableDeliveryError(f"SMTP connection failed: {exc}")
    return PermanentDeliveryError(f"SMTP: {exc}")


@dataclass(slots=True)
class _IdleConnection:
    client: aiosmtplib.SMTP
    since: float


class SmtpSink:
    """Sends emails over SMTP; :meth:`send` returns once the server accepted the message."""

    def __init__(
        self,
        *,
        address: str,
        username: str = "",
        password: str = "",
        tls_insecure_skip_verify: bool = False,
        timeout: float,
        pool_size: int = DEFAULT_POOL_SIZE,
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        """``tls_context`` replaces the system's trust store (a private CA); skipping
        verification wins over it."""
        self._host, self._port = parse_smtp_address(address)
        self._username = username
        self._password = password
        self._tls = tls_mode(self._port, with_credentials=bool(username))
        self._verify = not tls_insecure_skip_verify
        self._tls_context = tls_context if self._verify else None
        self._timeout = timeout
        self._pool_size = pool_size
        self._slots: asyncio.Semaphore | None = None
        self._idle: list[_IdleConnection] = []

    async def start(self) -> None:
        """Called once before the first send; connections open on demand."""
        if self._slots is None:
            self._slots = asyncio.Semaphore(self._pool_size)

    async def stop(self) -> None:
        """Says QUIT on the idle connections; idempotent. Sends still running are not waited for."""
        self._slots = None
        idle, self._idle = self._idle, []
        for connection in idle:
            await self._quit(connection.client)

    async def __aenter__(self) -> SmtpSink:
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
        slots = self._slots
        if slots is None:
            raise RuntimeError("SmtpSink.send called before start()")
        message = build_message(request)  # a bad header fails here, before any connection
        # Flattened once, here: send_message would copy, re-flatten and re-parse the headers
        # for the envelope, which cost a quarter of the time per email in `bench`.
        data = message.as_bytes()
        sender, recipient = addresses(request)
        # Waiting for a free connection is not the message's fault: the deadline starts after.
        async with slots:
            client = self._take_idle()
            try:
                async with asyncio.timeout(self._timeout):
                    if client is None:
                        client = await self._connect()
                    await client.sendmail(sender.addr_spec, [recipient.addr_spec], data)
            except BaseException as exc:
                if client is not None:
                    client.close()  # failed or cancelled mid-conversation: its state is unknown
                if isinstance(exc, aiosmtplib.SMTPException | OSError | TimeoutError):
                    raise self._failure(exc) from exc
                raise
            if self._slots is slots:
                self._idle.append(_IdleConnection(client, asyncio.get_running_loop().time()))
            else:  # stopped while this message was on its way: nobody would close it later
                await self._quit(client)

    def _failure(self, exc: Exception) -> DeliveryError:
        if isinstance(exc, aiosmtplib.SMTPAuthenticationError):
            # Every email fails until someone fixes the credentials: say so loudly, once per try.
            logger.error("SMTP server refused our login host=%s code=%s", self._host, exc.code)
        return classify_smtp_error(exc)

    def _take_idle(self) -> aiosmtplib.SMTP | None:
        """The most recently used idle connection still worth reusing; stale ones are closed."""
        now = asyncio.get_running_loop().time()
        while self._idle:
            connection = self._idle.pop()
            if connection.client.is_connected and now - connection.since < MAX_IDLE_SECONDS:
                return connection.client
            connection.client.close()
        return None

    async def _connect(self) -> aiosmtplib.SMTP:
        client = aiosmtplib.SMTP(
            hostname=self._host,
            port=self._port,
            timeout=self._timeout,
            use_tls=self._tls == "implicit",
            start_tls={"implicit": False, "required": True, "opportunistic": None}[self._tls],
            validate_certs=self._verify,
            tls_context=self._tls_context,
            username=self._username or None,
            password=self._password or None,
        )
        try:
            await client.connect()
        except BaseException:
            client.close()
            raise
        return client

    async def _quit(self, client: aiosmtplib.SMTP) -> None:
        with contextlib.suppress(aiosmtplib.SMTPException, OSError, TimeoutError):
            async with asyncio.timeout(self._timeout):
                await client.quit()
        client.close()
