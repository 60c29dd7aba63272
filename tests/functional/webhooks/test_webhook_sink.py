"""WebhookSink against real local aiohttp servers: what goes on the wire and what answers mean."""

from __future__ import annotations

import asyncio
import base64
import socket
import time
from collections.abc import AsyncIterator, Callable, Mapping

import pytest
from aiohttp import web
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from pipeline.devtools.receiver import ReceivedWebhook, WebhookReceiver
from pipeline.errors import PermanentDeliveryError, RetriableDeliveryError
from pipeline.webhooks.requests import USER_AGENT, WebhookRequest
from pipeline.webhooks.sink import WebhookSink

SECRET = "whsec_" + base64.b64encode(b"current-secret-of-32-bytes-long!").decode()
OLD_SECRET = "whsec_" + base64.b64encode(b"previous-secret-32-bytes-long!!!").decode()
OTHER_SECRET = "whsec_" + base64.b64encode(b"a-secret-nobody-configured-here!").decode()

BODY = b'{"event":"TriggerExceeded","org":"org1","trigger_limit":"80","usage_percentage":80}'

RequestFactory = Callable[..., WebhookRequest]
SinkFactory = Callable[..., WebhookSink]


def lower_headers(received: ReceivedWebhook) -> dict[str, str]:
    return {name.lower(): value for name, value in received.headers.items()}


@pytest.fixture
async def receiver() -> AsyncIterator[WebhookReceiver]:
    async with WebhookReceiver() as started:
        yield started


@pytest.fixture
def make_request(receiver: WebhookReceiver) -> RequestFactory:
    def make(
        *,
        event_id: str = "evt-0001",
        method: str = "POST",
        url: str | None = None,
        path: str = "/hooks/quota",
        body: bytes = BODY,
        extra_headers: Mapping[str, str] | None = None,
    ) -> WebhookRequest:
        return WebhookRequest(
            event_id=event_id,
            method=method,
            url=url if url is not None else receiver.url + path,
            body=body,
            extra_headers=dict(extra_headers or {}),
        )

    return make


#: The receivers are on loopback, which the SSRF guard refuses unless allow-listed.
LOOPBACK = ("127.0.0.0/8", "::1/128")


@pytest.fixture
async def make_sink() -> AsyncIterator[SinkFactory]:
    """Started sinks with short timeouts; every one is stopped after the test."""
    sinks: list[WebhookSink] = []

    def make(
        *,
        timeout: float = 5,
        connect_timeout: float = 2,
        signing_secrets: tuple[str, ...] = (),
        target_signing_secrets: Mapping[str, tuple[str, ...]] | None = None,
        allow_networks: tuple[str, ...] = LOOPBACK,
    ) -> WebhookSink:
        sink = WebhookSink(
            timeout=timeout,
            connect_timeout=connect_timeout,
            signing_secrets=signing_secrets,
            target_signing_secrets=target_signing_secrets,
            allow_networks=allow_networks,
        )
        sinks.append(sink)
        return sink

    yield make
    for sink in sinks:
        await sink.stop()


@pytest.fixture
async def sink(make_sink: SinkFactory) -> WebhookSink:
    started = make_sink()
    await started.start()
    return started


@pytest.fixture
async def hanging_url() -> AsyncIterator[str]:
    """A server whose handler waits on an event that is set only at teardown."""
    release = asyncio.Event()

    async def handle(request: web.Request) -> web.Response:
        await release.wait()
        return web.Response(status=200)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}/slow"
    finally:
        release.set()
        await runner.cleanup()


@pytest.fixture
def closed_port_url() -> str:
    """A loopback URL nothing listens on: the port was free a moment ago and is closed again."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/hook"


# --- success and what the receiver sees ---------------------------------------------------------


async def test_2xx_returns_status_and_sends_exact_request(
    receiver: WebhookReceiver, sink: WebhookSink, make_request: RequestFactory
) -> None:
    request = make_request(
        method="PUT",
        path="/hooks/quota?team=ops",
        extra_headers={"X-Tenant": "acme", "Authorization": "Bearer abc"},
    )
    before = time.time()

    status = await sink.send(request)

    after = time.time()
    assert status == 200
    [got] = await receiver.wait_for(1, timeout=5)
    headers = lower_headers(got)
    assert got.method == "PUT"
    assert got.path == "/hooks/quota?team=ops"
    assert got.body == BODY
    assert headers["x-tenant"] == "acme"
    assert headers["authorization"] == "Bearer abc"
    assert headers["webhook-id"] == "evt-0001"
    assert int(before) <= int(headers["webhook-timestamp"]) <= after
    assert headers["user-agent"] == USER_AGENT
    assert headers["content-type"] == "application/json"
    assert "webhook-signature" not in headers  # no secret configured


@pytest.mark.parametrize("answer", [201, 202, 204])
async def test_any_2xx_is_success(
    receiver: WebhookReceiver, sink: WebhookSink, make_request: RequestFactory, answer: int
) -> None:
    receiver.status = answer
    assert await sink.send(make_request()) == answer


async def test_header_map_cannot_override_our_headers(
    receiver: WebhookReceiver, sink: WebhookSink, make_request: RequestFactory
) -> None:
    request = make_request(
        extra_headers={"Webhook-Id": "forged", "user-agent": "evil/1.0", "X-Kept": "yes"}
    )

    await sink.send(request)

    [got] = await receiver.wait_for(1, timeout=5)
    headers = lower_headers(got)
    assert headers["webhook-id"] == "evt-0001"
    assert headers["user-agent"] == USER_AGENT
    assert headers["x-kept"] == "yes"


# --- signatures ---------------------------------------------------------------------------------


async def test_signature_verifies_with_the_secret(
    receiver: WebhookReceiver, make_sink: SinkFactory, make_request: RequestFactory
) -> None:
    async with make_sink(signing_secrets=(SECRET,)) as sink:
        await sink.send(make_request())

    [got] = await receiver.wait_for(1, timeout=5)
    headers = lower_headers(got)
    assert headers["webhook-signature"].startswith("v1,")
    Webhook(SECRET).verify(got.body, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(OTHER_SECRET).verify(got.body, headers)


async def test_during_rotation_either_secret_verifies(
    receiver: WebhookReceiver, make_sink: SinkFactory, make_request: RequestFactory
) -> None:
    async with make_sink(signing_secrets=(SECRET, OLD_SECRET)) as sink:
        await sink.send(make_request())

    [got] = await receiver.wait_for(1, timeout=5)
    headers = lower_headers(got)
    assert len(headers["webhook-signature"].split(" ")) == 2
    Webhook(SECRET).verify(got.body, headers)
    Webhook(OLD_SECRET).verify(got.body, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(OTHER_SECRET).verify(got.body, headers)


async def test_a_target_with_its_own_secret_is_signed_with_it_alone(
    receiver: WebhookReceiver, make_sink: SinkFactory, make_request: RequestFactory
) -> None:
    per_target = {f"{receiver.url}/acme/": (OTHER_SECRET,), f"{receiver.url}/plain/": ()}
    async with make_sink(signing_secrets=(SECRET,), target_signing_secrets=per_target) as sink:
        await sink.send(make_request(path="/acme/hook"))
        await sink.send(make_request(path="/plain/hook"))
        await sink.send(make_request(path="/other/hook"))

    acme, plain, other = await receiver.wait_for(3, timeout=5)
    Webhook(OTHER_SECRET).verify(acme.body, lower_headers(acme))
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(acme.body, lower_headers(acme))
    assert "webhook-signature" not in lower_headers(plain)
    Webhook(SECRET).verify(other.body, lower_headers(other))


async def test_tampered_body_does_not_verify(
    receiver: WebhookReceiver, make_sink: SinkFactory, make_request: RequestFactory
) -> None:
    async with make_sink(signing_secrets=(SECRET,)) as sink:
        await sink.send(make_request())

    [got] = await receiver.wait_for(1, timeout=5)
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(got.body.replace(b"80", b"90"), lower_headers(got))


async def test_same_id_on_every_attempt_and_timestamp_per_attempt(
    receiver: WebhookReceiver, make_sink: SinkFactory, make_request: RequestFactory
) -> None:
    answers = iter([500, 200])
    receiver.responder = lambda _: web.Response(status=next(answers))
    request = make_request()
    async with make_sink(signing_secrets=(SECRET,)) as sink:
        with pytest.raises(RetriableDeliveryError):
            await sink.send(request)
        [first] = await receiver.wait_for(1, timeout=5)
        first_ts = int(lower_headers(first)["webhook-timestamp"])
        # Timestamps have one-second resolution: let the clock tick before the retry.
        deadline = time.monotonic() + 5
        while int(time.time()) <= first_ts:
            assert time.monotonic() < deadline, "the wall clock did not move"
            await asyncio.sleep(0.02)  # poll until the wall clock ticks
        assert await sink.send(request) == 200

    first, second = await receiver.wait_for(2, timeout=5)
    first_headers, second_headers = lower_headers(first), lower_headers(second)
    assert first_headers["webhook-id"] == second_headers["webhook-id"] == "evt-0001"
    assert int(second_headers["webhook-timestamp"]) > first_ts
    assert first.body == second.body == BODY
    # Each attempt is signed for its own timestamp.
    Webhook(SECRET).verify(first.body, first_headers)
    Webhook(SECRET).verify(second.body, second_headers)
    assert first_headers["webhook-signature"] != second_headers["webhook-signature"]


# --- failures -----------------------------------------------------------------------------------


@pytest.mark.parametrize("answer", [500, 502, 503, 408])
async def test_5xx_and_408_are_retriable(
    receiver: WebhookReceiver, sink: WebhookSink, make_request: RequestFactory, answer: int
) -> None:
    receiver.status = answer

    with pytest.raises(RetriableDeliveryError) as caught:
        await sink.send(make_request())

    assert caught.value.status == answer
    assert caught.value.retriable
    assert caught.value.retry_after is None


async def test_429_honours_retry_after(
    receiver: WebhookReceiver, sink: WebhookSink, make_request: RequestFactory
) -> None:
    receiver.responder = lambda _: web.Response(status=429, headers={"Retry-After": "7"})

    with pytest.raises(RetriableDeliveryError) as caught:
        await sink.send(make_request())

    assert caught.value.status == 429
    assert caught.value.retry_after == 7


@pytest.mark.parametrize("answer", [410, 400, 401, 404])
async def test_other_4xx_are_permanent(
    receiver: WebhookReceiver, sink: WebhookSink, make_request: RequestFactory, answer: int
) -> None:
    receiver.status = answer

    with pytest.raises(PermanentDeliveryError) as caught:
        await sink.send(make_request())

    assert caught.value.status == answer
    assert not caught.value.retriable


async def test_redirect_is_not_followed(
    receiver: WebhookReceiver, sink: WebhookSink, make_request: RequestFactory
) -> None:
    def redirect_once(got: ReceivedWebhook) -> web.Response:
        if got.path == "/hooks/quota":
            return web.Response(status=302, headers={"Location": "/moved"})
        return web.Response(status=200)

    receiver.responder = redirect_once

    with pytest.raises(PermanentDeliveryError) as caught:
        await sink.send(make_request())

    assert caught.value.status == 302
    # The sink has returned: a followed redirect would already have reached the receiver.
    assert [got.path for got in receiver.received] == ["/hooks/quota"]


async def test_endpoint_that_never_answers_times_out_retriably(
    make_sink: SinkFactory, make_request: RequestFactory, hanging_url: str
) -> None:
    sink = make_sink(timeout=0.5, connect_timeout=0.5)
    await sink.start()
    started = time.monotonic()

    with pytest.raises(RetriableDeliveryError) as caught:
        await sink.send(make_request(url=hanging_url))

    assert time.monotonic() - started < 5
    assert caught.value.status is None


async def test_closed_port_is_retriable(
    sink: WebhookSink, make_request: RequestFactory, closed_port_url: str
) -> None:
    with pytest.raises(RetriableDeliveryError) as caught:
        await sink.send(make_request(url=closed_port_url))

    assert caught.value.status is None
    assert caught.value.__cause__ is not None


# --- lifecycle ----------------------------------------------------------------------------------


async def test_send_before_start_raises(
    make_sink: SinkFactory, make_request: RequestFactory, receiver: WebhookReceiver
) -> None:
    with pytest.raises(RuntimeError, match="start"):
        await make_sink().send(make_request())
    assert receiver.received == []


async def test_stop_is_idempotent(make_sink: SinkFactory, make_request: RequestFactory) -> None:
    sink = make_sink()
    await sink.stop()  # before start
    await sink.start()
    await sink.stop()
    await sink.stop()
    with pytest.raises(RuntimeError):
        await sink.send(make_request())


async def test_async_with_starts_and_stops(
    receiver: WebhookReceiver, make_sink: SinkFactory, make_request: RequestFactory
) -> None:
    async with make_sink() as sink:
        assert await sink.send(make_request()) == 200
        assert await sink.send(make_request(event_id="evt-0002")) == 200

    with pytest.raises(RuntimeError):
        await sink.send(make_request())
    received = await receiver.wait_for(2, timeout=5)
    assert [lower_headers(got)["webhook-id"] for got in received] == ["evt-0001", "evt-0002"]


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_loopback_target_is_refused_without_the_allow_list(
    make_sink: SinkFactory, make_request: RequestFactory, receiver: WebhookReceiver, host: str
) -> None:
    sink = make_sink(allow_networks=())
    await sink.start()
    url = f"http://{host}:{receiver.port}/hooks/quota"
    with pytest.raises(PermanentDeliveryError, match="refused"):
        await sink.send(make_request(url=url))
    assert receiver.received == []
