"""EmailRequest and the MIME message built from it: parts, headers, and refused header values."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.message import EmailMessage
from email.utils import format_datetime

import pytest

from pipeline.email.message import (
    EVENT_ID_HEADER,
    EmailRequest,
    addresses,
    build_message,
    message_id,
)
from pipeline.errors import PermanentDeliveryError

NOW = 1764331200.0  # 2025-11-28 12:00:00 UTC


def make_request(**changes: str) -> EmailRequest:
    request = EmailRequest(
        event_id="evt_0123456789abcdef",
        to="dev@example.com",
        subject="Quota alert: Zoë's key reached 80%",
        text="Plain words.\n",
        html="<p>Rich words.</p>\n",
        from_email="alerts@quota.example",
        from_name="Quota Pipeline",
    )
    return dataclasses.replace(request, **changes)


def sent_form(message: EmailMessage) -> EmailMessage:
    """The message as a receiver parses it off the wire."""
    parsed = message_from_bytes(message.as_bytes(), policy=policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


def test_message_is_multipart_alternative_text_then_html() -> None:
    message = sent_form(build_message(make_request(), now=NOW))

    assert message.get_content_type() == "multipart/alternative"
    text, html = message.iter_parts()
    assert text.get_content_type() == "text/plain"
    # On the wire lines end in CRLF, as SMTP wants.
    assert text.get_content() == "Plain words.\r\n"
    assert html.get_content_type() == "text/html"
    assert html.get_content() == "<p>Rich words.</p>\r\n"


def test_headers_name_sender_recipient_subject_date_and_event() -> None:
    message = sent_form(build_message(make_request(), now=NOW))

    assert message["From"] == "Quota Pipeline <alerts@quota.example>"
    assert message["To"] == "dev@example.com"
    assert message["Subject"] == "Quota alert: Zoë's key reached 80%"
    assert message["Date"].datetime.timestamp() == NOW
    assert message[EVENT_ID_HEADER] == "evt_0123456789abcdef"
    assert message["Message-ID"] == message_id(make_request())


def test_non_ascii_subject_and_name_travel_as_ascii_and_read_back_intact() -> None:
    built = build_message(make_request(from_name="Zoë, Ltd"), now=NOW)

    assert built.as_bytes().isascii()
    message = sent_form(built)
    assert message["From"].addresses[0].display_name == "Zoë, Ltd"
    assert message["Subject"] == "Quota alert: Zoë's key reached 80%"


def test_message_id_is_the_same_on_every_attempt_and_differs_per_recipient() -> None:
    first = message_id(make_request())

    assert first == message_id(make_request(subject="another attempt, same event"))
    assert first.startswith("<evt_0123456789abcdef.")
    assert first.endswith("@quota-pipeline>")
    assert message_id(make_request(to="ops@example.com")) != first
    assert message_id(make_request(event_id="evt_other")) != first


def test_an_event_id_unfit_for_a_message_id_is_hashed_into_one() -> None:
    odd = message_id(make_request(event_id="id with <angles> and @"))

    message = sent_form(build_message(make_request(event_id="id with <angles> and @")))
    assert message["Message-ID"] == odd
    assert "<angles>" not in odd
    assert odd.count("@") == 1


@pytest.mark.parametrize("field", ["subject", "from_name", "to", "from_email", "event_id"])
@pytest.mark.parametrize("line_break", ["\r\n", "\n", "\r"])
def test_a_line_break_in_any_header_value_is_refused(field: str, line_break: str) -> None:
    value = getattr(make_request(), field) + f"{line_break}Bcc: victim@example.net"

    with pytest.raises(PermanentDeliveryError, match=f"{field} contains a line break"):
        build_message(make_request(**{field: value}))


@pytest.mark.parametrize("bad", ["", "nobody", "two words@example.com", "<dev@example.com>", "a@"])
def test_an_unusable_address_is_a_permanent_error(bad: str) -> None:
    with pytest.raises(PermanentDeliveryError, match="not an email address"):
        addresses(make_request(to=bad))
    with pytest.raises(PermanentDeliveryError, match="not an email address"):
        addresses(make_request(from_email=bad))


def test_an_international_domain_goes_out_in_idna_form() -> None:
    _, recipient = addresses(make_request(to="dev@bücher.example"))

    assert recipient.addr_spec == "dev@xn--bcher-kva.example"
    assert sent_form(build_message(make_request(to="dev@bücher.example")))["To"] == (
        "dev@xn--bcher-kva.example"
    )


def test_an_empty_sender_name_leaves_the_bare_address() -> None:
    message = sent_form(build_message(make_request(from_name="")))

    assert message["From"] == "alerts@quota.example"


def test_request_survives_the_json_round_trip() -> None:
    request = make_request(text="line one\nline two ✓")

    assert EmailRequest.from_json(request.to_json()) == request


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"not json", "not JSON"),
        (b"[]", "not a JSON object"),
        (b'{"event_id": "e", "to": 3}', "lacks string fields: to, subject"),
    ],
)
def test_a_damaged_job_is_a_permanent_error(raw: bytes, reason: str) -> None:
    with pytest.raises(PermanentDeliveryError, match=reason):
        EmailRequest.from_json(raw)


def standard_build(request: EmailRequest, boundary: str) -> bytes:
    """The same message built with the standard library's own policy.SMTP, nothing shared."""
    sender, recipient = addresses(request)
    message = EmailMessage(policy=policy.SMTP)
    message["From"] = sender
    message["To"] = recipient
    message["Subject"] = request.subject
    message["Date"] = format_datetime(datetime.fromtimestamp(NOW, tz=UTC))
    message["Message-ID"] = message_id(request)
    message[EVENT_ID_HEADER] = request.event_id
    message.set_content(request.text, subtype="plain")
    message.make_alternative(boundary=boundary)
    message.add_alternative(request.html, subtype="html")
    return message.as_bytes()


def test_headers_shared_between_messages_change_no_byte_of_any_of_them() -> None:
    # Senders, recipients and MIME headers repeat from email to email and are parsed and
    # folded once; every message must still be exactly what the standard library makes.
    requests = [
        make_request(),
        make_request(to="ops@example.com", subject="Ünïcödé " * 12, event_id="b"),
        make_request(from_name='Ops <Desk>, "quoted"', text="é" * 300, html="<b>" * 40),
        make_request(),  # everything repeated
    ]
    for request in requests:
        built = build_message(request, now=NOW)
        boundary = built.get_boundary()
        assert boundary is not None
        assert built.as_bytes() == standard_build(request, boundary)


def test_every_message_has_a_boundary_of_its_own_that_no_part_contains() -> None:
    messages = [build_message(make_request(), now=NOW) for _ in range(3)]
    boundaries = {message.get_boundary() for message in messages}
    assert len(boundaries) == 3
    for message in messages:
        boundary = message.get_boundary()
        assert boundary is not None
        for part in message.iter_parts():
            assert boundary not in part.as_string()
