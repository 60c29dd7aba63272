"""SmtpSink against a real aiosmtpd server on loopback: plain, STARTTLS, AUTH, the pool, and what
the server's answers mean."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import trustme

from pipeline.devtools.smtp_server import LocalSmtpServer, ReceivedEmail
from pipeline.email.message import EVENT_ID_HEADER, EmailRequest
from pipeline.email.smtp import SmtpSink
from pipeline.errors import PermanentDeliveryError, RetriableDeliveryError

REQUEST = EmailRequest(
    event_id="evt_0123456789abcdef",
    to="dev@example.com",
    subject="Quota alert: org1 reached 80%",
    text="Plain words.\n",
    html="<p>Rich words.</p>\n",
    from_email="alerts@quota.example",
    from_name="Quota Pipeline",
)

StartServer = Callable[..., Awaitable[LocalSmtpServer]]
MakeSink = Callable[..., Awaitable[SmtpSink]]


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def server_tls(ca: trustme.CA) -> ssl.SSLContext:
    """A throwaway certificate for 127.0.0.1, signed by a CA nobody trusts by default."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    return context


@pytest.fixture(scope="module")
def trusting_client(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


@pytest.fixture
async def start_server() -> AsyncIterator[StartServer]:
    servers: list[LocalSmtpServer] = []

    async def start(**options: Any) -> LocalSmtpServer:
        server = LocalSmtpServer(**options)
        servers.append(server)
        await server.start()
        return server

    yield start
    for server in servers:
        await server.stop()


@pytest.fixture
async def make_sink() -> AsyncIterator[MakeSink]:
    """Started sinks with a short deadline; every one is stopped after the test."""
    sinks: list[SmtpSink] = []

    async def make(address: str, **options: Any) -> SmtpSink:
        sink = SmtpSink(address=address, **{"timeout": 5, **options})
        sinks.append(sink)
        await sink.start()
        return sink

    yield make
    for sink in sinks:
        await sink.stop()


async def test_plain_smtp_delivers_the_message(
    start_server: StartServer, make_sink: MakeSink
) -> None:
    server = await start_server()
    sink = await make_sink(server.address)

    await sink.send(REQUEST)

    [received] = server.received
    assert received.mail_from == "alerts@quota.example"
    assert received.rcpt_tos == ("dev@example.com",)
    assert not received.tls
    message = received.message
    assert message.get_content_type() == "multipart/alternative"
    assert message["Subject"] == REQUEST.subject
    assert message[EVENT_ID_HEADER] == REQUEST.event_id
    assert [part.get_content_type() for part in message.iter_parts()] == [
        "text/plain",
        "text/html",
    ]


async def test_sequential_sends_reuse_one_connection(
    start_server: StartServer, make_sink: MakeSink
) -> None:
    server = await start_server()
    sink = await make_sink(server.address)

    for number in range(5):
        await sink.send(dataclasses.replace(REQUEST, event_id=f"evt_{number}"))

    assert server.connections == 1
    assert [received.connection for received in server.received] == [1] * 5


async def test_concurrent_sends_share_a_bounded_pool(
    start_server: StartServer, make_sink: MakeSink
) -> None:
    server = await start_server()
    sink = await make_sink(server.address, pool_size=3)

    await asyncio.gather(
        *(sink.send(dataclasses.replace(REQUEST, event_id=f"evt_{n}")) for n in range(12))
    )

    assert len(server.received) == 12
    assert server.connections <= 3


async def test_starttls_with_verification_skipped(
    start_server: StartServer, make_sink: MakeSink, server_tls: ssl.SSLContext
) -> None:
    server = await start_server(tls_context=server_tls)
    sink = await make_sink(server.address, tls_insecure_skip_verify=True)

    await sink.send(REQUEST)

    [received] = server.received
    assert received.tls


async def test_certificates_are_verified_unless_told_otherwise(
    start_server: StartServer,
    make_sink: MakeSink,
    server_tls: ssl.SSLContext,
    trusting_client: ssl.SSLContext,
) -> None:
    server = await start_server(tls_context=server_tls)
    untrusting = await make_sink(server.address)
    trusting = await make_sink(server.address, tls_context=trusting_client)

    with pytest.raises(RetriableDeliveryError, match="CERTIFICATE_VERIFY_FAILED"):
        await untrusting.send(REQUEST)
    assert server.received == []

    await trusting.send(REQUEST)
    assert [received.tls for received in server.received] == [True]


async def test_auth_over_starttls_with_the_right_credentials(
    start_server: StartServer, make_sink: MakeSink, server_tls: ssl.SSLContext
) -> None:
    server = await start_server(tls_context=server_tls, credentials=("quota", "s3cret"))
    sink = await make_sink(
        server.address, username="quota", password="s3cret", tls_insecure_skip_verify=True
    )

    await sink.send(REQUEST)

    assert len(server.received) == 1


async def test_wrong_credentials_are_permanent(
    start_server: StartServer, make_sink: MakeSink, server_tls: ssl.SSLContext
) -> None:
    server = await start_server(tls_context=server_tls, credentials=("quota", "s3cret"))
    sink = await make_sink(
        server.address, username="quota", password="wrong", tls_insecure_skip_verify=True
    )

    with pytest.raises(PermanentDeliveryError) as caught:
        await sink.send(REQUEST)

    assert caught.value.status == 535
    assert "wrong" not in str(caught.value)
    assert server.received == []


async def test_credentials_never_travel_without_tls(
    start_server: StartServer, make_sink: MakeSink
) -> None:
    server = await start_server()  # offers no STARTTLS
    sink = await make_sink(server.address, username="quota", password="s3cret")

    with pytest.raises(PermanentDeliveryError, match="STARTTLS"):
        await sink.send(REQUEST)

    assert server.received == []


async def test_451_is_retriable_and_the_next_attempt_delivers_once(
    start_server: StartServer, make_sink: MakeSink
) -> None:
    answers = iter(["451 4.3.0 try again later"])

    def busy_once(_received: ReceivedEmail) -> str | None:
        return next(answers, None)

    server = await start_server(responder=busy_once)
    sink = await make_sink(server.address)

    with pytest.raises(RetriableDeliveryError) as caught:
        await sink.send(REQUEST)
    assert caught.value.status == 451

    await sink.send(REQUEST)

    assert len(server.received) == 1
    assert server.connections == 2  # the connection that failed was dropped, not reused


async def test_550_is_permanent(start_server: StartServer, make_sink: MakeSink) -> None:
    server = await start_server(responder=lambda _received: "550 5.7.1 message refused")
    sink = await make_sink(server.address)

    with pytest.raises(PermanentDeliveryError, match=r"550 5\.7\.1 message refused") as caught:
        await sink.send(REQUEST)

    assert caught.value.status == 550


async def test_a_refused_recipient_is_permanent(
    start_server: StartServer, make_sink: MakeSink
) -> None:
    server = await start_server(refuse={"dev@example.com"})
    sink = await make_sink(server.address)

    with pytest.raises(PermanentDeliveryError, match="recipient refused") as caught:
        await sink.send(REQUEST)

    assert caught.value.status == 550
    assert server.received == []


async def test_header_injection_is_refused_before_connecting(
    start_server: StartServer, make_sink: MakeSink
) -> None:
    server = await start_server()
    sink = await make_sink(server.address)

    with pytest.raises(PermanentDeliveryError, match="from_name contains a line break"):
        await sink.send(dataclasses.replace(REQUEST, from_name="Ops\r\nBcc: victim@example.net"))

    assert server.connections == 0


async def test_a_server_that_never_answers_hits_the_deadline(make_sink: MakeSink) -> None:
    release = asyncio.Event()

    async def silent(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await release.wait()  # never sends the greeting
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    sink = await make_sink(f"127.0.0.1:{port}", timeout=0.3)
    try:
        with pytest.raises(RetriableDeliveryError, match="timed out"):
            await sink.send(REQUEST)
    finally:
        release.set()
        server.close()
        await server.wait_closed()


async def test_an_unreachable_server_is_retriable(make_sink: MakeSink) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    sink = await make_sink(f"127.0.0.1:{port}")

    with pytest.raises(RetriableDeliveryError):
        await sink.send(REQUEST)


async def test_send_before_start_is_a_programming_error() -> None:
    with pytest.raises(RuntimeError, match="before start"):
        await SmtpSink(address="127.0.0.1:25", timeout=1).send(REQUEST)


async def test_a_counting_server_keeps_no_messages(
    start_server: StartServer, make_sink: MakeSink
) -> None:
    server = await start_server(keep=False)
    sink = await make_sink(server.address)

    await asyncio.gather(*(sink.send(REQUEST) for _ in range(3)))

    assert await server.wait_for(3, timeout=5) == []
    assert server.accepted == 3


async def test_the_sink_and_server_work_as_async_context_managers() -> None:
    async with LocalSmtpServer() as server, SmtpSink(address=server.address, timeout=5) as sink:
        await sink.send(REQUEST)
        [received] = await server.wait_for(1, timeout=5)

    assert received.message[EVENT_ID_HEADER] == REQUEST.event_id
