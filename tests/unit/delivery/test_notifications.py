"""pipeline.delivery.planning: which deliveries an event makes, and rebuilding them for redrive."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from pipeline.config import Settings
from pipeline.delivery.jobs import DeliveryJob
from pipeline.delivery.planning import Notifier, Unsendable, rebuild, recipient_of
from pipeline.email.message import EmailRequest
from pipeline.portal.events import PortalEvent, decode_portal_event
from pipeline.usage.quota import Crossing
from pipeline.usage.triggers import trigger_event

MONITOR_URL = "https://hooks.example.com/quota"
ORG_HOOK = "https://acme.example.com/hooks"


def settings(*, email: bool = True, **monitor: Any) -> Settings:
    return Settings.model_validate(
        {
            "monitor": {"configuration": {"target_path": MONITOR_URL, **monitor}},
            "email_backend": {
                "enable_email_notifications": email,
                "default_from_email": "quota@example.com",
            },
        }
    )


def key_trigger(key: str = "k-1234", org: str = "acme") -> dict[str, Any]:
    crossing = Crossing(threshold=80, usage=8, period_start=0.0, period_end=3600.0, ts=1.0)
    return trigger_event("key", org_id=org, key=key, quota_max=10, crossing=crossing)


def org_trigger(org: str = "acme") -> dict[str, Any]:
    crossing = Crossing(threshold=50, usage=5, period_start=0.0, period_end=3600.0, ts=1.0)
    return trigger_event("org", org_id=org, key="", quota_max=10, crossing=crossing)


def emails(planned: list[Any]) -> list[str]:
    return [recipient_of(job) for job in planned if job.channel == "email"]


def test_a_key_trigger_goes_to_the_developer_and_the_org_desk() -> None:
    notifier = Notifier.from_settings(settings())
    options = {"trigger_event": {"email": "desk@acme.example", "webhook": ORG_HOOK}}
    event = key_trigger()

    planned = notifier.trigger_emails(event, developer_email="dev@x.example", org_options=options)

    assert emails(planned) == ["dev@x.example", "desk@acme.example"]
    for job in planned:
        assert isinstance(job, DeliveryJob)
        assert job.event_id == event["id"]
        request = EmailRequest.from_json(job.body)
        assert request.from_email == "quota@example.com"
        assert "80%" in request.subject


def test_one_email_per_address_and_none_without_one() -> None:
    notifier = Notifier.from_settings(settings())
    same = {"trigger_event": {"email": "dev@x.example"}}

    assert emails(
        notifier.trigger_emails(key_trigger(), developer_email="dev@x.example", org_options=same)
    ) == ["dev@x.example"]
    assert notifier.trigger_emails(key_trigger(), developer_email=None, org_options=None) == []
    # An org trigger has no developer: only the org's desk hears of it.
    assert emails(
        notifier.trigger_emails(org_trigger(), developer_email="dev@x.example", org_options=same)
    ) == ["dev@x.example"]


def test_email_off_sends_no_email() -> None:
    notifier = Notifier.from_settings(settings(email=False))
    options = {"trigger_event": {"email": "desk@acme.example"}}

    assert notifier.trigger_emails(key_trigger(), developer_email="d@x", org_options=options) == []


def test_trigger_webhooks_are_the_monitor_and_the_org_webhook() -> None:
    notifier = Notifier.from_settings(settings())
    planned = notifier.trigger_webhooks(key_trigger(), {"trigger_event": {"webhook": ORG_HOOK}})

    assert [job.url for job in planned] == [MONITOR_URL, ORG_HOOK]


def test_a_template_that_fails_on_an_event_makes_it_unsendable(tmp_path: Path) -> None:
    template = tmp_path / "body.j2"
    template.write_text("{{ no_such_field }}")
    notifier = Notifier.from_settings(settings(template_path=str(template)))

    [planned] = notifier.trigger_webhooks(key_trigger(), None)

    assert isinstance(planned, Unsendable)
    assert planned.job.url == MONITOR_URL
    assert "no_such_field" in planned.reason


def portal(name: str, data: dict[str, Any]) -> PortalEvent:
    raw = orjson.dumps({"event": name, "org_id": "acme", "data": data})
    return decode_portal_event(raw, default_id="evt_portal_1")


def test_a_key_request_goes_to_the_org_webhook_as_received_and_to_both_addresses() -> None:
    notifier = Notifier.from_settings(settings())
    data = {"portal_developer": {"email": "dev@x.example"}, "by_user": "ann"}
    options = {"key_request_event": {"webhook": ORG_HOOK, "email": "desk@acme.example"}}

    planned = notifier.portal_deliveries(portal("key_request_event.submitted", data), options)

    [webhook] = [job for job in planned if job.channel == "webhook"]
    assert isinstance(webhook, DeliveryJob)
    assert orjson.loads(webhook.body) == {"event": "key_request_event.submitted", "data": data}
    assert webhook.event_id == "evt_portal_1"
    assert emails(planned) == ["desk@acme.example", "dev@x.example"]


def test_an_api_event_is_never_mailed_to_a_developer() -> None:
    notifier = Notifier.from_settings(settings())

    planned = notifier.portal_deliveries(
        portal("api_event.created", {"email": "dev@x.example"}), None
    )

    assert planned == []


@pytest.mark.parametrize(
    ("target", "channel"),
    [(MONITOR_URL, "webhook"), (ORG_HOOK, "webhook"), ("mailto:dev@x.example", "email")],
)
def test_rebuilt_trigger_deliveries_match_the_first_ones(target: str, channel: str) -> None:
    notifier = Notifier.from_settings(settings())
    event = key_trigger()
    first = [
        *notifier.trigger_webhooks(event, {"trigger_event": {"webhook": ORG_HOOK}}),
        *notifier.trigger_emails(event, developer_email="dev@x.example", org_options=None),
    ]

    [again] = rebuild(notifier, event, target)

    assert isinstance(again, DeliveryJob)
    assert again.channel == channel
    [original] = [job for job in first if job.url == target]
    assert (again.event_id, again.body) == (original.event_id, original.body)


def test_rebuilt_portal_deliveries_match_the_first_ones() -> None:
    notifier = Notifier.from_settings(settings())
    event = portal("developer_event.signed_up", {"email": "new@x.example"})
    options = {"developer_event": {"webhook": ORG_HOOK}}
    first = notifier.portal_deliveries(event, options)

    for original in first:
        assert isinstance(original, DeliveryJob)
        [again] = rebuild(notifier, dict(original.event), original.url)
        assert isinstance(again, DeliveryJob)
        assert (again.url, again.event_id, again.body) == (
            original.url,
            original.event_id,
            original.body,
        )
