"""Trigger emails on a real broker and worker, to a real SMTP server on loopback: the key's
developer and the org's address, retried on 451 (sent once), dead-lettered on 550."""

from __future__ import annotations

import time

import orjson
import pytest

from pipeline.devtools.smtp_server import LocalSmtpServer
from pipeline.email.message import EVENT_ID_HEADER
from tests.integration.conftest import consume, produce, read_to_end, request_count, wait_for_table

DEVELOPER = "dev@example.com"
ORG_DESK = "alerts@acme.example"


@pytest.fixture
async def smtp():
    async with LocalSmtpServer() as server:
        yield server


async def one_email_trigger(make_config, cli, topics_of, start_worker, smtp, **delivery):
    """A worker emailing through ``smtp``; one key of org acme (with an email desk) crossing
    50%. Returns the settings."""
    config = make_config(
        monitor={"global_trigger_limits": [50]},
        email_backend={
            "enable_email_notifications": True,
            "code": "smtp",
            "settings": {"SMTPAddress": smtp.address},
            "default_from_email": "quota@acme.example",
            "default_from_name": "Quota Alerts",
        },
        delivery=delivery,
    )
    settings = await topics_of(config)
    orgs = {"acme": {"quota_max": -1, "event_options": {"trigger_event": {"email": ORG_DESK}}}}
    status, _, err = await cli(config, "orgs", "put", "-", stdin=orjson.dumps(orgs))
    assert status == 0, err
    sessions = {
        "mail-key-7f3a": {
            "org_id": "acme",
            "quota_max": 2,
            "quota_renewal_rate": 0,
            "meta_data": {"developer_email": DEVELOPER},
        }
    }
    status, _, err = await cli(config, "sessions", "put", "-", stdin=orjson.dumps(sessions))
    assert status == 0, err
    await start_worker(config)
    await wait_for_table(settings, "sessions", lambda s: "mail-key-7f3a" in s)
    await produce(
        settings.kafka.bootstrap_servers,
        settings.topics.requests,
        [request_count("mail-key-7f3a", time.time(), 1, org="acme")],
    )
    return settings


async def test_a_key_trigger_emails_the_developer_and_the_org(
    make_config, cli, topics_of, start_worker, smtp
):
    settings = await one_email_trigger(make_config, cli, topics_of, start_worker, smtp)
    emails = await smtp.wait_for(2, timeout=60)
    triggers = await consume(
        settings.kafka.bootstrap_servers, settings.topics.triggers, until=lambda r: len(r) >= 1
    )
    event_id = orjson.loads(triggers[0].value)["id"]
    assert sorted(rcpt for email in emails for rcpt in email.rcpt_tos) == [ORG_DESK, DEVELOPER]
    for email in emails:
        message = email.message
        assert message[EVENT_ID_HEADER] == event_id
        assert message["From"] == "Quota Alerts <quota@acme.example>"
        assert "50%" in message["Subject"]
        assert message.get_content_type() == "multipart/alternative"
        text = message.get_body(("plain",)).get_content()
        html = message.get_body(("html",)).get_content()
        assert "acme" in text
        assert "acme" in html
        # The key is masked in mail: a working credential does not belong in an inbox.
        assert "mail-key-7f3a" not in text + html
    assert len({email.message["Message-ID"] for email in emails}) == 2


async def test_a_451_is_retried_and_the_email_sent_once(
    make_config, cli, topics_of, start_worker, smtp
):
    refused: list[str] = []

    def busy_once(email) -> str | None:
        if DEVELOPER in email.rcpt_tos and not refused:
            refused.append(email.message[EVENT_ID_HEADER])
            return "451 4.3.0 try again later"
        return None

    smtp.responder = busy_once
    settings = await one_email_trigger(
        make_config, cli, topics_of, start_worker, smtp, retry_schedule=[0.2, 0.2]
    )
    emails = await smtp.wait_for(2, timeout=60)
    to_developer = [email for email in emails if DEVELOPER in email.rcpt_tos]
    assert len(refused) == 1
    assert [email.message[EVENT_ID_HEADER] for email in to_developer] == refused
    assert await read_to_end(settings.kafka.bootstrap_servers, settings.topics.dlq) == []


async def test_a_550_recipient_is_dead_lettered_with_the_reason(
    make_config, cli, topics_of, start_worker, smtp
):
    smtp.responder = lambda email: "550 5.1.1 no such user" if DEVELOPER in email.rcpt_tos else None
    settings = await one_email_trigger(
        make_config, cli, topics_of, start_worker, smtp, retry_schedule=[0.2, 0.2]
    )
    letters = await consume(
        settings.kafka.bootstrap_servers, settings.topics.dlq, until=lambda r: len(r) >= 1
    )
    letter = orjson.loads(letters[0].value)
    assert letter["channel"] == "email"
    assert letter["target"] == f"mailto:{DEVELOPER}"
    assert letter["attempts"] == 1
    assert letter["last_status"] == 550
    assert "no such user" in letter["last_error"]
    # The org's copy went out regardless.
    [email] = await smtp.wait_for(1, timeout=30)
    assert email.rcpt_tos == (ORG_DESK,)
