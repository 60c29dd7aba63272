"""SendGrid, Mailgun, Mandrill and SES sinks against local peers that check what each provider
documents and answer its documented success and error bodies."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs

import orjson
import pytest
from aiohttp import web

from pipeline.devtools.receiver import WebhookReceiver
from pipeline.email.http_provider import HttpEmailSink
from pipeline.email.mailgun import MailgunSink
from pipeline.email.mandrill import MandrillSink
from pipeline.email.message import EVENT_ID_HEADER, EmailRequest, message_id
from pipeline.email.sendgrid import SendGridSink
from pipeline.email.ses import SesSink
from pipeline.errors import PermanentDeliveryError, RetriableDeliveryError
from tests.functional.email.email_peers import (
    MailgunPeer,
    MandrillPeer,
    SendGridPeer,
    SesPeer,
    isolate_aws_environment,
    json_of,
    json_response,
)

REQUEST = EmailRequest(
    event_id="evt_0123456789abcdef",
    to="dev@example.com",
    subject="Quota alert: org1 reached 80%",
    text="Plain words.\n",
    html="<p>Rich words.</p>\n",
    from_email="alerts@quota.example",
    from_name="Quota Pipeline",
)

Sink = TypeVar("Sink", bound=HttpEmailSink)
StartSink = Callable[[Sink], Awaitable[Sink]]


@pytest.fixture(autouse=True)
def no_real_aws(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """SES here signs with configured keys; should it ever reach for the credential chain, it
    must not find the developer's."""
    isolate_aws_environment(monkeypatch, tmp_path)


@pytest.fixture
async def receiver() -> AsyncIterator[WebhookReceiver]:
    async with WebhookReceiver() as started:
        yield started


@pytest.fixture
async def start_sink() -> AsyncIterator[StartSink[Any]]:
    """Starts a sink for the test; every one is stopped after it."""
    sinks: list[HttpEmailSink] = []

    async def start(sink: Sink) -> Sink:
        sinks.append(sink)
        await sink.start()
        return sink

    yield start
    for sink in sinks:
        await sink.stop()


# --- SendGrid ------------------------------------------------------------------------------


async def test_sendgrid_sends_the_documented_request(
    receiver: WebhookReceiver, start_sink: StartSink[Any]
) -> None:
    peer = SendGridPeer("SG.right")
    receiver.responder = peer
    sink = await start_sink(SendGridSink(api_key="SG.right", base_url=receiver.url, timeout=5))

    await sink.send(REQUEST)

    [call] = peer.calls
    body = json_of(call)
    assert body["personalizations"] == [{"to": [{"email": "dev@example.com"}]}]
    assert body["from"] == {"email": "alerts@quota.example", "name": "Quota Pipeline"}
    assert body["subject"] == REQUEST.subject
    assert body["content"] == [
        {"type": "text/plain", "value": REQUEST.text},
        {"type": "text/html", "value": REQUEST.html},
    ]
    assert body["headers"] == {EVENT_ID_HEADER: REQUEST.event_id}


async def test_sendgrid_wrong_key_is_permanent_with_sendgrids_words(
    receiver: WebhookReceiver, start_sink: StartSink[Any]
) -> None:
    peer = SendGridPeer("SG.right")
    receiver.responder = peer
    sink = await start_sink(SendGridSink(api_key="SG.wrong", base_url=receiver.url, timeout=5))

    with pytest.raises(PermanentDeliveryError) as caught:
        await sink.send(REQUEST)

    assert caught.value.status == 401
    assert "authorization grant is invalid" in str(caught.value)
    assert "SG.wrong" not in str(caught.value)
    assert peer.calls == []


async def test_sendgrid_429_is_retriable_after_its_retry_after(
    receiver: WebhookReceiver, start_sink: StartSink[Any]
) -> None:
    peer = SendGridPeer("SG.k")
    peer.script.append(
        json_response(429, {"errors": [{"message": "too many requests"}]}, **{"Retry-After": "12"})
    )
    receiver.responder = peer
    sink = await start_sink(SendGridSink(api_key="SG.k", base_url=receiver.url, timeout=5))

    with pytest.raises(RetriableDeliveryError) as caught:
        await sink.send(REQUEST)
    assert (caught.value.status, caught.value.retry_after) == (429, 12)

    await sink.send(REQUEST)  # the next attempt goes through
    assert len(peer.calls) == 2


# --- Mailgun -------------------------------------------------------------------------------


async def test_mailgun_posts_the_documented_form(
    receiver: WebhookReceiver, start_sink: StartSink[Any]
) -> None:
    peer = MailgunPeer("mg.example.com", "key-right")
    receiver.responder = peer
    sink = await start_sink(
        MailgunSink(domain="mg.example.com", api_key="key-right", base_url=receiver.url, timeout=5)
    )

    await sink.send(REQUEST)

    [call] = peer.calls
    form = parse_qs(call.body.decode())
    assert form["from"] == ["Quota Pipeline <alerts@quota.example>"]
    assert form["to"] == ["dev@example.com"]
    assert form["subject"] == [REQUEST.subject]
    assert form["text"] == [REQUEST.text]
    assert form["html"] == [REQUEST.html]
    assert form[f"h:{EVENT_ID_HEADER}"] == [REQUEST.event_id]
    assert form["h:Message-Id"] == [message_id(REQUEST)]


async def test_mailgun_wrong_key_is_permanent(
    receiver: WebhookReceiver, start_sink: StartSink[Any]
) -> None:
    peer = MailgunPeer("mg.example.com", "key-right")
    receiver.responder = peer
    sink = await start_sink(
        MailgunSink(domain="mg.example.com", api_key="key-wrong", base_url=receiver.url, timeout=5)
    )

    with pytest.raises(PermanentDeliveryError, match="mailgun answered 401: Forbidden") as caught:
        await sink.send(REQUEST)
    assert caught.value.status == 401


async def test_mailgun_unknown_domain_is_permanent_with_mailguns_words(
    receiver: WebhookReceiver, start_sink: StartSink[Any]
) -> None:
    peer = MailgunPeer("mg.example.com", "key")
    receiver.responder = peer
    sink = await start_sink(
        MailgunSink(domain="other.example", api_key="key", base_url=receiver.url, timeout=5)
    )

    with pytest.raises(PermanentDeliveryError, match="404: Domain not found"):
        await sink.send(REQUEST)


async def test_mailgun_5xx_is_retriable(
    receiver: WebhookReceiver, start_sink: StartSink[Any]
) -> None:
    peer = MailgunPeer("mg.example.com", "key")
    peer.script.append(web.Response(status=503, text="Service Unavailable"))
    receiver.responder = peer
    sink = await start_sink(
        MailgunSink(domain="mg.example.com", api_key="key", base_url=receiver.url, timeout=5)
    )

    with pytest.raises(RetriableDeliveryError, match="503: Service Unavailable"):
        await sink.send(REQUEST)


# --- Mandrill ------------------------------------------------------------------------------


async def test_mandrill_sends_the_key_and_message_in_the_body(
    receiver: WebhookReceiver, start_sink: StartSink[Any]
) -> None:
    peer = MandrillPeer("md-right")
    receiver.responder = peer
    sink = await start_sink(MandrillSink(api_key="md-right", base_url=receiver.url, timeout=5))

    await sink.send(REQUEST)

    [call] = peer.calls
    message = json_of(call)["message"]
    assert message["to"] == [{"email": "dev@example.com", "type": "to"}]
    assert (message["from_email"], message["from_name"]) == (
        "alerts@quota.example",
        "Quota Pipeline",
    )
    assert (message["subject"], message["text"], message["html"]) == (
        REQUEST.subject,
        REQUEST.text,
        REQUEST.html,
    )
    assert message["headers"] == {EVENT_ID_HEADER: REQUEST.event_id}


async def test_mandrill_invalid_key_is_permanent_despite_its_500(
    receiver: WebhookReceiver, start_sink: StartSink[Any]
) -> None:
    peer = MandrillPeer("md-right")
    receiver.responder = peer
    sink = await start_sink(MandrillSink(api_key="md-wrong", base_url=receiver.url, timeout=5))

    with pytest.raises(PermanentDeliveryError, match="Invalid_Key: Invalid API key") as caught:
        await sink.send(REQUEST)
    assert caught.value.status == 500


async def test_mandrill_rejected_recipient_is_permanent_with_the_reason(
    receiver: WebhookReceiver, start_sink: StartSink[Any]
) -> None:
    peer = MandrillPeer("md")
    rejected = [{"email": "dev@example.com", "status": "rejected", "reject_reason": "hard-bounce"}]
    peer.script.append(json_response(200, rejected))
    receiver.responder = peer
    sink = await start_sink(MandrillSink(api_key="md", base_url=receiver.url, timeout=5))

    with pytest.raises(PermanentDeliveryError, match="rejected the recipient: hard-bounce"):
        await sink.send(REQUEST)


async def test_mandrill_queued_is_success(
    receiver: WebhookReceiver, start_sink: StartSink[Any]
) -> None:
    peer = MandrillPeer("md")
    peer.script.append(json_response(200, [{"email": "dev@example.com", "status": "queued"}]))
    receiver.responder = peer
    sink = await start_sink(MandrillSink(api_key="md", base_url=receiver.url, timeout=5))

    await sink.send(REQUEST)

    assert len(peer.calls) == 1


# --- Amazon SES ----------------------------------------------------------------------------


def ses_sink(receiver: WebhookReceiver, *, secret: str = "secret-right") -> SesSink:
    return SesSink(
        region="eu-west-1",
        access_key_id="AKIDEXAMPLE",
        secret_access_key=secret,
        base_url=receiver.url,
        timeout=5,
    )


async def test_ses_request_is_signed_as_botocore_recomputes_it(
    receiver: WebhookReceiver, start_sink: StartSink[Any]
) -> None:
    peer = SesPeer("eu-west-1", "AKIDEXAMPLE", "secret-right")
    receiver.responder = peer
    sink = await start_sink(ses_sink(receiver))

    await sink.send(REQUEST)

    [call] = peer.calls  # the peer admits only a signature equal to its own computation
    assert call.headers["Authorization"].startswith("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/")
    assert "/eu-west-1/ses/aws4_request" in call.headers["Authorization"]
    body = json_of(call)
    assert body["Destination"] == {"ToAddresses": ["dev@example.com"]}
    assert body["FromEmailAddress"] == "alerts@quota.example"


async def test_ses_carries_the_whole_mime_message(
    receiver: WebhookReceiver, start_sink: StartSink[Any]
) -> None:
    peer = SesPeer("eu-west-1", "AKIDEXAMPLE", "secret-right")
    receiver.responder = peer
    sink = await start_sink(ses_sink(receiver))

    await sink.send(REQUEST)

    message = SesPeer.raw_message(peer.calls[0])
    assert message.get_content_type() == "multipart/alternative"
    assert [part.get_content_type() for part in message.iter_parts()] == [
        "text/plain",
        "text/html",
    ]
    assert message["From"] == "Quota Pipeline <alerts@quota.example>"
    assert message["Message-ID"] == message_id(REQUEST)
    assert message[EVENT_ID_HEADER] == REQUEST.event_id


async def test_ses_wrong_secret_fails_the_signature_check_permanently(
    receiver: WebhookReceiver, start_sink: StartSink[Any]
) -> None:
    peer = SesPeer("eu-west-1", "AKIDEXAMPLE", "secret-right")
    receiver.responder = peer
    sink = await start_sink(ses_sink(receiver, secret="secret-wrong"))

    with pytest.raises(PermanentDeliveryError, match="InvalidSignatureException") as caught:
        await sink.send(REQUEST)

    assert caught.value.status == 403
    assert "secret-wrong" not in str(caught.value)
    assert peer.calls == []


async def test_ses_message_rejected_is_permanent_and_throttling_retriable(
    receiver: WebhookReceiver, start_sink: StartSink[Any]
) -> None:
    peer = SesPeer("eu-west-1", "AKIDEXAMPLE", "secret-right")
    peer.script += [
        SesPeer.error(400, "MessageRejected", "Email address is not verified."),
        SesPeer.error(429, "TooManyRequestsException", "Maximum sending rate exceeded."),
    ]
    receiver.responder = peer
    sink = await start_sink(ses_sink(receiver))

    with pytest.raises(PermanentDeliveryError, match="MessageRejected: Email address is not"):
        await sink.send(REQUEST)
    with pytest.raises(RetriableDeliveryError, match="TooManyRequestsException") as caught:
        await sink.send(REQUEST)
    assert caught.value.status == 429


# --- What every HTTP provider shares -------------------------------------------------------


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_an_unreachable_provider_is_retriable(start_sink: StartSink[Any]) -> None:
    sink = await start_sink(
        SendGridSink(api_key="k", base_url=f"http://127.0.0.1:{closed_port()}", timeout=5)
    )

    with pytest.raises(RetriableDeliveryError, match="sendgrid: connection failed"):
        await sink.send(REQUEST)


async def test_a_provider_slower_than_the_timeout_is_retriable(
    receiver: WebhookReceiver, start_sink: StartSink[Any]
) -> None:
    release = asyncio.Event()

    async def hold(_received: object) -> web.Response:
        await release.wait()
        return web.Response(status=202)

    receiver.responder = hold
    sink = await start_sink(MandrillSink(api_key="k", base_url=receiver.url, timeout=0.3))
    try:
        with pytest.raises(RetriableDeliveryError, match="mandrill: timed out"):
            await sink.send(REQUEST)
    finally:
        release.set()


@pytest.mark.parametrize(
    "make",
    [
        lambda url: SendGridSink(api_key="k", base_url=url, timeout=5),
        lambda url: MailgunSink(domain="d", api_key="k", base_url=url, timeout=5),
        lambda url: MandrillSink(api_key="k", base_url=url, timeout=5),
        lambda url: SesSink(
            region="eu-west-1", access_key_id="a", secret_access_key="s", base_url=url, timeout=5
        ),
    ],
)
async def test_header_injection_is_refused_before_any_request(
    receiver: WebhookReceiver, start_sink: StartSink[Any], make: Callable[[str], HttpEmailSink]
) -> None:
    sink = await start_sink(make(receiver.url))

    with pytest.raises(PermanentDeliveryError, match="subject contains a line break"):
        await sink.send(dataclasses.replace(REQUEST, subject="Hi\r\nBcc: victim@example.net"))

    assert receiver.received == []


async def test_send_before_start_is_a_programming_error() -> None:
    with pytest.raises(RuntimeError, match="before start"):
        await SendGridSink(api_key="k", timeout=5).send(REQUEST)


async def test_the_sink_works_as_an_async_context_manager(receiver: WebhookReceiver) -> None:
    peer = SendGridPeer("k")
    receiver.responder = peer

    async with SendGridSink(api_key="k", base_url=receiver.url, timeout=5) as sink:
        await sink.send(REQUEST)

    assert len(peer.calls) == 1
    assert orjson.loads(peer.calls[0].body)["subject"] == REQUEST.subject
