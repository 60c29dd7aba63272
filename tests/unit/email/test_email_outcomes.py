"""What SMTP failures and provider answers mean for a delivery (pure decisions, no network)."""

from __future__ import annotations

import aiosmtplib
import orjson
import pytest
from multidict import CIMultiDict

from pipeline.email.http_provider import ProviderAnswer
from pipeline.email.mailgun import MailgunSink
from pipeline.email.mandrill import MandrillSink
from pipeline.email.sendgrid import SendGridSink
from pipeline.email.ses import SesSink, region_of
from pipeline.email.smtp import classify_smtp_error, parse_smtp_address, tls_mode
from pipeline.errors import ConfigError, PermanentDeliveryError, RetriableDeliveryError

NOW = 1_800_000_000.0


def answer(status: int, body: object = b"", **headers: str) -> ProviderAnswer:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    return ProviderAnswer(status, CIMultiDict(headers), raw)


# --- SMTP ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("smtp.example.com:587", ("smtp.example.com", 587)),
        (" 127.0.0.1:2525 ", ("127.0.0.1", 2525)),
        ("[::1]:25", ("::1", 25)),
    ],
)
def test_smtp_address_is_host_and_port(value: str, expected: tuple[str, int]) -> None:
    assert parse_smtp_address(value) == expected


@pytest.mark.parametrize("value", ["", "host", "host:", "host:99999", "user@host:25", "h:25/x"])
def test_smtp_address_without_a_usable_port_is_a_config_error(value: str) -> None:
    with pytest.raises(ConfigError, match="SMTPAddress"):
        parse_smtp_address(value)


def test_tls_is_implicit_on_465_required_with_credentials_else_opportunistic() -> None:
    assert tls_mode(465, with_credentials=False) == "implicit"
    assert tls_mode(465, with_credentials=True) == "implicit"
    assert tls_mode(587, with_credentials=True) == "required"
    assert tls_mode(25, with_credentials=False) == "opportunistic"


@pytest.mark.parametrize(
    ("error", "kind", "status"),
    [
        (aiosmtplib.SMTPDataError(451, "4.3.0 try later"), RetriableDeliveryError, 451),
        (aiosmtplib.SMTPDataError(554, "5.7.1 spam"), PermanentDeliveryError, 554),
        (aiosmtplib.SMTPSenderRefused(550, "no", "a@b.c"), PermanentDeliveryError, 550),
        (aiosmtplib.SMTPAuthenticationError(535, "bad"), PermanentDeliveryError, 535),
        (aiosmtplib.SMTPConnectResponseError(421, "busy"), RetriableDeliveryError, 421),
        (aiosmtplib.SMTPServerDisconnected("gone"), RetriableDeliveryError, None),
        (aiosmtplib.SMTPConnectError("refused"), RetriableDeliveryError, None),
        (aiosmtplib.SMTPReadTimeoutError("slow"), RetriableDeliveryError, None),
        (TimeoutError(), RetriableDeliveryError, None),
        (ConnectionResetError("reset"), RetriableDeliveryError, None),
        (
            aiosmtplib.SMTPException("STARTTLS extension not supported"),
            PermanentDeliveryError,
            None,
        ),
    ],
)
def test_smtp_failures_are_classified(error: Exception, kind: type, status: int | None) -> None:
    outcome = classify_smtp_error(error)

    assert type(outcome) is kind
    assert outcome.status == status


def test_refused_recipients_are_classified_by_their_code() -> None:
    refused = aiosmtplib.SMTPRecipientsRefused(
        [aiosmtplib.SMTPRecipientRefused(550, "5.1.1 unknown user", "dev@example.com")]
    )
    busy = aiosmtplib.SMTPRecipientsRefused(
        [aiosmtplib.SMTPRecipientRefused(452, "4.2.2 mailbox full", "dev@example.com")]
    )

    permanent = classify_smtp_error(refused)
    assert isinstance(permanent, PermanentDeliveryError)
    assert permanent.status == 550
    assert "dev@example.com: 550 5.1.1 unknown user" in str(permanent)
    assert isinstance(classify_smtp_error(busy), RetriableDeliveryError)


# --- HTTP providers ------------------------------------------------------------------------

SENDGRID = SendGridSink(api_key="SG.key", timeout=5)
MAILGUN = MailgunSink(domain="mg.example.com", api_key="key", timeout=5)
MANDRILL = MandrillSink(api_key="md", timeout=5)
SES = SesSink(region="eu-west-1", access_key_id="AKID", secret_access_key="secret", timeout=5)


@pytest.mark.parametrize(
    ("sink", "accepted"),
    [(SENDGRID, answer(202)), (MAILGUN, answer(200, {"id": "<x>", "message": "Queued."}))],
)
def test_a_2xx_is_success(sink: SendGridSink | MailgunSink, accepted: ProviderAnswer) -> None:
    assert sink.outcome(accepted, now=NOW) is None


def test_429_is_retriable_after_the_time_it_asks_for() -> None:
    error = SENDGRID.outcome(answer(429, {"errors": []}, **{"Retry-After": "30"}), now=NOW)

    assert isinstance(error, RetriableDeliveryError)
    assert (error.status, error.retry_after) == (429, 30)


@pytest.mark.parametrize("status", [500, 502, 503, 408])
def test_server_errors_are_retriable(status: int) -> None:
    assert isinstance(MAILGUN.outcome(answer(status, b"oops"), now=NOW), RetriableDeliveryError)


def test_sendgrid_errors_carry_sendgrid_messages() -> None:
    body = {
        "errors": [
            {"message": "Does not contain a valid address.", "field": "from.email", "help": None}
        ]
    }

    error = SENDGRID.outcome(answer(400, body), now=NOW)

    assert isinstance(error, PermanentDeliveryError)
    assert str(error) == "sendgrid answered 400: from.email: Does not contain a valid address."


def test_mailgun_errors_carry_mailgun_messages_json_or_text() -> None:
    json_error = MAILGUN.outcome(answer(400, {"message": "'to' parameter is missing"}), now=NOW)
    text_error = MAILGUN.outcome(answer(401, b"Forbidden"), now=NOW)

    assert str(json_error) == "mailgun answered 400: 'to' parameter is missing"
    assert str(text_error) == "mailgun answered 401: Forbidden"
    assert isinstance(text_error, PermanentDeliveryError)
    assert MAILGUN.account_problem(answer(401, b"Forbidden"))


@pytest.mark.parametrize("verdict", ["sent", "queued", "scheduled"])
def test_mandrill_accepts_sent_queued_and_scheduled(verdict: str) -> None:
    body = [{"email": "dev@example.com", "status": verdict, "_id": "abc"}]

    assert MANDRILL.outcome(answer(200, body), now=NOW) is None


@pytest.mark.parametrize(("verdict", "reason"), [("rejected", "hard-bounce"), ("invalid", None)])
def test_mandrill_refusing_the_recipient_is_permanent(verdict: str, reason: str | None) -> None:
    body = [{"email": "dev@example.com", "status": verdict, "reject_reason": reason}]

    error = MANDRILL.outcome(answer(200, body), now=NOW)

    assert isinstance(error, PermanentDeliveryError)
    assert str(error) == f"mandrill {verdict} the recipient: {reason or verdict}"


def test_mandrill_200_without_a_verdict_is_not_retried() -> None:
    assert isinstance(MANDRILL.outcome(answer(200, b"<html>"), now=NOW), PermanentDeliveryError)


def test_mandrill_error_names_decide_whatever_the_status() -> None:
    invalid_key = answer(
        500, {"status": "error", "code": -1, "name": "Invalid_Key", "message": "Invalid API key"}
    )
    general = answer(500, {"status": "error", "code": -1, "name": "GeneralError", "message": "x"})

    error = MANDRILL.outcome(invalid_key, now=NOW)
    assert isinstance(error, PermanentDeliveryError)
    assert str(error) == "mandrill answered 500: Invalid_Key: Invalid API key"
    assert MANDRILL.account_problem(invalid_key)
    assert isinstance(MANDRILL.outcome(general, now=NOW), RetriableDeliveryError)


def test_ses_errors_name_their_type_and_message() -> None:
    rejected = answer(
        400,
        {"message": "Email address is not verified."},
        **{"x-amzn-ErrorType": "MessageRejected:http://internal.amazon.com/coral/"},
    )

    error = SES.outcome(rejected, now=NOW)

    assert isinstance(error, PermanentDeliveryError)
    assert str(error) == "amazonses answered 400: MessageRejected: Email address is not verified."


def test_ses_throttling_is_retriable_even_as_a_400() -> None:
    throttled = answer(
        400, {"message": "Rate exceeded"}, **{"x-amzn-ErrorType": "ThrottlingException"}
    )

    assert isinstance(SES.outcome(throttled, now=NOW), RetriableDeliveryError)


def test_ses_suspended_account_is_an_account_problem() -> None:
    suspended = answer(
        400, {"message": "suspended"}, **{"x-amzn-ErrorType": "AccountSuspendedException"}
    )

    assert isinstance(SES.outcome(suspended, now=NOW), PermanentDeliveryError)
    assert SES.account_problem(suspended)


@pytest.mark.parametrize(
    ("endpoint", "region"),
    [
        ("email.eu-west-1.amazonaws.com", "eu-west-1"),
        ("https://email-fips.us-east-1.amazonaws.com/", "us-east-1"),
        ("http://127.0.0.1:9000", None),
    ],
)
def test_ses_region_from_a_regional_endpoint(endpoint: str, region: str | None) -> None:
    assert region_of(endpoint) == region
