"""A local SMTP server (aiosmtpd) in the running event loop: the bench counts what it gets, the
tests assert on it and make it fail on purpose."""

from __future__ import annotations

import asyncio
import hmac
import ssl
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from email import message_from_bytes, policy
from email.message import EmailMessage
from types import TracebackType
from typing import Any

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

#: Answers that mean "accepted", as aiosmtpd expects handlers to return them.
ACCEPTED = "250 2.0.0 OK: queued"


@dataclass(frozen=True, slots=True)
class ReceivedEmail:
    """One message as the server accepted it."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    data: bytes
    #: Index of the connection it came over, counting from 1.
    connection: int
    #: Whether it came over TLS.
    tls: bool

    @property
    def message(self) -> EmailMessage:
        parsed = message_from_bytes(self.data, policy=policy.default)
        assert isinstance(parsed, EmailMessage)
        return parsed


#: Chooses the answer to a message's DATA: None accepts it, a reply line ("451 4.3.0 busy")
#: refuses it (and it is not recorded).
Responder = Callable[[ReceivedEmail], str | None]


class LocalSmtpServer:
    """An SMTP server on loopback that records every accepted message and counts connections.

    With ``tls_context`` it offers STARTTLS and requires it; with ``credentials`` it requires
    AUTH (over TLS) with that login and password. Recipients in ``refuse`` get 550 at RCPT.
    ``keep=False`` only counts what arrives (``accepted``), for runs too long to keep it all.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        tls_context: ssl.SSLContext | None = None,
        credentials: tuple[str, str] | None = None,
        refuse: Collection[str] = (),
        responder: Responder | None = None,
        keep: bool = True,
    ) -> None:
        self.host = host
        self.port = port
        self.received: list[ReceivedEmail] = []
        self.accepted = 0
        self.connections = 0
        self.responder = responder
        self._tls_context = tls_context
        self._credentials = credentials
        self._refuse = frozenset(refuse)
        self._keep = keep
        self._server: asyncio.Server | None = None
        self._sessions: list[SMTP] = []
        self._arrived: asyncio.Condition | None = None

    @property
    def address(self) -> str:
        """``host:port``, as Tyk's SMTPAddress wants it."""
        return f"{self.host}:{self.port}"

    async def start(self) -> None:
        """Binds the port (a free one when 0) and starts serving."""
        self._arrived = asyncio.Condition()
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._new_connection, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stops serving and drops open connections; idempotent."""
        if self._server is not None:
            server, self._server = self._server, None
            server.close()
            # Before Python 3.13 a closed server leaves its connections open: close them here.
            for session in self._sessions:
                if session.transport is not None:
                    session.transport.close()
            self._sessions.clear()
            await server.wait_closed()

    async def __aenter__(self) -> LocalSmtpServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def wait_for(self, count: int, timeout: float) -> list[ReceivedEmail]:
        """Wait until at least ``count`` messages were accepted and return those kept;
        TimeoutError after ``timeout`` seconds."""
        assert self._arrived is not None, "start() the server first"
        async with asyncio.timeout(timeout), self._arrived:
            await self._arrived.wait_for(lambda: self.accepted >= count)
        return list(self.received)

    def _new_connection(self) -> SMTP:
        self.connections += 1
        session = SMTP(
            _Handler(self._refuse, self._accept, self.connections),
            hostname="localhost",
            tls_context=self._tls_context,
            require_starttls=self._tls_context is not None,
            auth_required=self._credentials is not None,
            auth_require_tls=True,
            authenticator=self._authenticate,
        )
        self._sessions.append(session)
        return session

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        if self._credentials is None or not isinstance(data, LoginPassword):
            return AuthResult(success=False, handled=False)
        login, password = self._credentials
        expected = f"{login}\0{password}".encode()
        matches = hmac.compare_digest(data.login + b"\0" + data.password, expected)
        return AuthResult(success=matches, handled=False)

    async def _accept(self, received: ReceivedEmail) -> str:
        answer = self.responder(received) if self.responder is not None else None
        if answer is not None:
            return answer
        self.accepted += 1
        if self._keep:
            self.received.append(received)
        assert self._arrived is not None
        async with self._arrived:
            self._arrived.notify_all()
        return ACCEPTED


class _Handler:
    """aiosmtpd's hooks for one connection."""

    def __init__(
        self,
        refuse: frozenset[str],
        accept: Callable[[ReceivedEmail], Awaitable[str]],
        connection: int,
    ) -> None:
        self._refuse = refuse
        self._accept = accept
        self._connection = connection

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        if address in self._refuse:
            return "550 5.1.1 mailbox unavailable"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        received = ReceivedEmail(
            mail_from=envelope.mail_from or "",
            rcpt_tos=tuple(envelope.rcpt_tos),
            data=content,
            connection=self._connection,
            tls=session.ssl is not None,
        )
        return await self._accept(received)
