"""Portal and dashboard events on a real broker and worker: each family to the org's webhook
(exactly as received) and email, developers' own emails, unknown orgs and unknown events."""

from __future__ import annotations

import orjson
import pytest

from pipeline.devtools.smtp_server import LocalSmtpServer
from pipeline.email.message import EVENT_ID_HEADER
from tests.integration.conftest import consume, poll, produce, scrape

DESK = "portal-desk@acme.example"
DEVELOPER = "jane@dev.example"

#: Tyk's documented key_request_event payload: the request, its developer and catalogue entry.
KEY_REQUEST = {
    "id": "5e8f3c2a1b",
    "by_user": "5e8f3c2a00",
    "fields": {"use_case": "billing dashboard"},
    "date_created": "2026-11-28T10:00:00Z",
    "version": "v2",
    "for_plan": "gold",
    "approved": False,
    "portal_developer": {"id": "5e8f3c2a00", "email": DEVELOPER, "org_id": "acme"},
    "catalogue_entry": {"name": "Payments API", "short_description": "Pay"},
}


@pytest.fixture
async def smtp():
    async with LocalSmtpServer() as server:
        yield server


async def portal_worker(make_config, cli, topics_of, start_worker, receiver, smtp, **email_backend):
    """A worker with email on, and org acme sending every event family to the receiver and
    its desk. Returns (settings, worker)."""
    config = make_config(
        email_backend={
            "enable_email_notifications": True,
            "settings": {"SMTPAddress": smtp.address},
            **email_backend,
        },
        delivery={"retry_schedule": [0.2]},
    )
    settings = await topics_of(config)
    options = {
        family: {"webhook": f"{receiver.url}/{family}", "email": DESK}
        for family in ("api_event", "key_event", "key_request_event", "developer_event")
    }
    orgs = {"acme": {"quota_max": -1, "event_options": options}}
    status, _, err = await cli(config, "orgs", "put", "-", stdin=orjson.dumps(orgs))
    assert status == 0, err
    worker = await start_worker(config)
    return settings, worker


async def publish_events(settings, *events):
    await produce(
        settings.kafka.bootstrap_servers,
        settings.topics.portal_events,
        [(event["org_id"].encode(), orjson.dumps(event)) for event in events],
    )


async def test_a_key_request_reaches_the_org_webhook_as_received_and_both_addresses(
    make_config, cli, topics_of, start_worker, receiver, smtp
):
    settings, _ = await portal_worker(make_config, cli, topics_of, start_worker, receiver, smtp)
    event = {"event": "key_request_event.submitted", "org_id": "acme", "data": KEY_REQUEST}
    await publish_events(settings, event)

    [hook] = await receiver.wait_for(1, timeout=60)
    assert hook.path == "/key_request_event"
    assert orjson.loads(hook.body) == {"event": event["event"], "data": KEY_REQUEST}
    emails = await smtp.wait_for(2, timeout=60)
    assert sorted(rcpt for email in emails for rcpt in email.rcpt_tos) == [DEVELOPER, DESK]
    # Every delivery of the event carries one id.
    assert {email.message[EVENT_ID_HEADER] for email in emails} == {hook.headers["webhook-id"]}
    for email in emails:
        assert "Payments API" in email.message.get_body(("plain",)).get_content()


@pytest.mark.parametrize(
    ("name", "data", "developer_mailed"),
    [
        ("api_event.created", {"api_id": "a1", "name": "Payments API"}, False),
        ("key_event.deleted", {"key": "secret-key-value"}, False),
        ("developer_event.signed_up", {"email": DEVELOPER, "id": "d1"}, True),
        ("key_request_event.approved", KEY_REQUEST, True),
    ],
)
async def test_each_event_family_goes_where_the_org_says(
    make_config, cli, topics_of, start_worker, receiver, smtp, name, data, developer_mailed
):
    settings, _ = await portal_worker(make_config, cli, topics_of, start_worker, receiver, smtp)
    await publish_events(settings, {"event": name, "org_id": "acme", "data": data})

    [hook] = await receiver.wait_for(1, timeout=60)
    assert hook.path == "/" + name.split(".")[0]
    assert orjson.loads(hook.body) == {"event": name, "data": data}
    expected = sorted([DESK, DEVELOPER] if developer_mailed else [DESK])
    emails = await smtp.wait_for(len(expected), timeout=60)
    assert sorted(rcpt for email in emails for rcpt in email.rcpt_tos) == expected
    if name.startswith("key_event"):
        # The key never travels by email.
        assert all(b"secret-key-value" not in email.data for email in emails)


async def test_unknown_org_is_counted_and_unknown_events_are_rejected_while_others_flow(
    make_config, cli, topics_of, start_worker, receiver, smtp
):
    settings, worker = await portal_worker(
        make_config, cli, topics_of, start_worker, receiver, smtp
    )
    unknown_org = {"event": "api_event.created", "org_id": "nobody", "data": {"api_id": "a"}}
    unknown_event = {"event": "api_event.exploded", "org_id": "acme", "data": {}}
    known = {"event": "api_event.deleted", "org_id": "acme", "data": {"api_id": "a2"}}
    await publish_events(settings, unknown_org, unknown_event, known)

    [hook] = await receiver.wait_for(1, timeout=60)
    assert orjson.loads(hook.body)["event"] == "api_event.deleted"
    [rejected] = await consume(
        settings.kafka.bootstrap_servers, settings.topics.rejected, until=lambda r: len(r) >= 1
    )
    assert "unknown event 'api_event.exploded'" in orjson.loads(rejected.value)["reason"]

    async def counted():
        metrics = await scrape(worker.web_url)
        return metrics.get(("quota_pipeline_portal_events_total", (("outcome", "no_targets"),)))

    # The unknown org's event sits in its own partition: poll the counter until it shows.
    assert await poll(counted) == 1
    assert len(receiver.received) == 1


async def test_key_requests_to_the_org_desk_come_as_one_digest_per_interval(
    make_config, cli, topics_of, start_worker, receiver, smtp
):
    settings, _ = await portal_worker(
        make_config, cli, topics_of, start_worker, receiver, smtp, key_request_digest=8
    )
    apis = ["Payments API", "Search API", "Maps API"]
    events = [
        {
            "event": "key_request_event.submitted",
            "org_id": "acme",
            "data": {**KEY_REQUEST, "id": f"kr-{i}", "catalogue_entry": {"name": api}},
        }
        for i, api in enumerate(apis)
    ]
    await publish_events(settings, *events)

    # The webhook and the developer hear of each request at once; the desk once, in a digest.
    await receiver.wait_for(3, timeout=60)
    emails = await smtp.wait_for(4, timeout=60)
    to_desk = [email for email in emails if email.rcpt_tos == (DESK,)]
    assert len(to_desk) == 1
    assert sum(email.rcpt_tos == (DEVELOPER,) for email in emails) == 3
    digest = to_desk[0].message
    assert digest["Subject"] == "3 key request updates for organisation acme"
    text = digest.get_body(("plain",)).get_content()
    assert all(api in text for api in apis)
