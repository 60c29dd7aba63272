"""Which deliveries one event makes: webhooks and emails, to whom, with what body.

Pure apart from reading templates at start-up. The delivery agent and the operators' redrive
and replay both use it, so a re-delivery is built exactly as the first one was.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from pipeline.config import Settings, WebhookConfig
from pipeline.delivery.jobs import DeliveryJob
from pipeline.email.message import EmailRequest
from pipeline.email.templates import EmailTemplates
from pipeline.errors import PermanentDeliveryError
from pipeline.portal.events import TEMPLATES, PortalEvent, developer_address
from pipeline.service.metrics import NO_RECIPIENT
from pipeline.webhooks.bodies import BodyTemplate
from pipeline.webhooks.requests import WebhookRequest, default_trigger_body

log = logging.getLogger(__name__)

MAILTO = "mailto:"
TRIGGER_TEMPLATE = "trigger_exceeded"
DIGEST_TEMPLATE = "key_request_digest"
DIGEST_EVENT = "key_request_event.digest"


@dataclass(frozen=True)
class Unsendable:
    """A delivery that cannot even be built (a template failed for this event)."""

    job: DeliveryJob
    reason: str


Planned = DeliveryJob | Unsendable


def email_target(address: str) -> str:
    return MAILTO + address


def recipient_of(job: DeliveryJob) -> str:
    return job.url.removeprefix(MAILTO)


@dataclass(frozen=True)
class EmailComposer:
    """Renders one event into one email to one address."""

    templates: EmailTemplates
    from_email: str
    from_name: str

    def compose(
        self, template: str, context: Mapping[str, Any], *, event_id: str, to: str, event: Any
    ) -> Planned:
        target = email_target(to)
        try:
            rendered = self.templates.render(template, context)
        except PermanentDeliveryError as exc:
            job = DeliveryJob(event_id, "EMAIL", target, b"", {}, event, channel="email")
            return Unsendable(job, str(exc))
        request = EmailRequest(
            event_id=event_id,
            to=to,
            subject=rendered.subject,
            text=rendered.text,
            html=rendered.html,
            from_email=self.from_email,
            from_name=self.from_name,
        )
        return DeliveryJob(event_id, "EMAIL", target, request.to_json(), {}, event, channel="email")

    def digest(self, to: str, org_id: str, requests: list[dict[str, Any]]) -> Planned:
        """One email for several key_request_event emails to one org address; its id is the
        same whenever the same requests are batched again (after a restart)."""
        first = requests[0].get("id", "")
        material = f"digest\x1f{to}\x1f{first}\x1f{len(requests)}"
        event_id = "evt_" + hashlib.sha256(material.encode()).hexdigest()[:32]
        context = {"org_id": org_id, "count": len(requests), "requests": requests}
        # The requests ride along, so a dead-lettered digest can be redriven as it was.
        event = {"id": event_id, "event": DIGEST_EVENT, "org_id": org_id, "requests": requests}
        return self.compose(DIGEST_TEMPLATE, context, event_id=event_id, to=to, event=event)

    def trigger(self, event: dict[str, Any], to: str) -> Planned:
        return self.compose(TRIGGER_TEMPLATE, event, event_id=event["id"], to=to, event=event)

    def portal(self, event: PortalEvent, to: str, payload: Mapping[str, Any]) -> Planned:
        context = {"event": event.name, "org_id": event.org_id, "data": event.data}
        return self.compose(TEMPLATES[event.name], context, event_id=event.id, to=to, event=payload)


@dataclass(frozen=True)
class Notifier:
    """Every delivery of trigger and portal events, per the config and the org's options."""

    webhook: WebhookConfig
    body_template: BodyTemplate | None
    #: None when email notifications are off.
    email: EmailComposer | None

    @classmethod
    def from_settings(cls, settings: Settings) -> Notifier:
        """Templates are read and compiled here: a broken one stops the start (ConfigError)."""
        webhook = settings.monitor.configuration
        body = BodyTemplate.load(webhook.template_path) if webhook.template_path else None
        backend = settings.email_backend
        email = None
        if backend.enable_email_notifications:
            email = EmailComposer(
                EmailTemplates.load(settings.templates_dir),
                backend.default_from_email,
                backend.default_from_name,
            )
        return cls(webhook, body, email)

    def trigger_webhooks(
        self, event: dict[str, Any], org_options: Mapping[str, Any] | None
    ) -> list[Planned]:
        """The monitor webhook and the org's ``trigger_event.webhook``."""
        planned = []
        if self.webhook.target_path:
            planned.append(self.monitor_webhook(event))
        org_webhook = option(org_options, "trigger_event", "webhook")
        if org_webhook:
            planned.append(self.org_webhook(event, org_webhook))
        return planned

    def monitor_webhook(self, event: dict[str, Any]) -> Planned:
        """Tyk's monitor webhook, its body from ``template_path`` when one is set."""
        webhook = self.webhook
        try:
            body = (
                self.body_template.render(event)
                if self.body_template is not None
                else default_trigger_body(event)
            )
        except PermanentDeliveryError as exc:
            job = DeliveryJob(event["id"], webhook.method, webhook.target_path, b"", {}, event)
            return Unsendable(job, str(exc))
        request = WebhookRequest(
            event["id"], webhook.method, webhook.target_path, body, webhook.header_map
        )
        return DeliveryJob.for_request(request, event)

    @staticmethod
    def org_webhook(event: dict[str, Any], url: str) -> Planned:
        request = WebhookRequest(event["id"], "POST", url, default_trigger_body(event), {})
        return DeliveryJob.for_request(request, event)

    def trigger_emails(
        self,
        event: dict[str, Any],
        *,
        developer_email: str | None,
        org_options: Mapping[str, Any] | None,
    ) -> list[Planned]:
        """A key trigger to the key's developer; every trigger of an org to its address."""
        if self.email is None:
            return []
        addresses = []
        if event.get("subject") == "key":
            if developer_email:
                addresses.append(developer_email)
            else:
                no_recipient(TRIGGER_TEMPLATE, event["id"])
        org_email = option(org_options, "trigger_event", "email")
        if org_email:
            addresses.append(org_email)
        # One email per address, in order.
        return [self.email.trigger(event, to) for to in dict.fromkeys(addresses)]

    def portal_deliveries(
        self,
        event: PortalEvent,
        org_options: Mapping[str, Any] | None,
        *,
        org_email: bool = True,
    ) -> list[Planned]:
        """The org's webhook and email for the event's option, and the developer's email
        (``org_email=False`` leaves the org's email out: it goes into a digest)."""
        planned: list[Planned] = []
        payload = event.delivered_payload()
        webhook = option(org_options, event.option, "webhook")
        if webhook:
            body = orjson.dumps(event.webhook_body())
            planned.append(
                DeliveryJob.for_request(
                    WebhookRequest(event.id, "POST", webhook, body, {}), payload
                )
            )
        if self.email is None:
            return planned
        org_address = option(org_options, event.option, "email") if org_email else None
        for to in dict.fromkeys(a for a in (org_address, developer_address(event)) if a):
            planned.append(self.email.portal(event, to, payload))
        return planned


def rebuild(notifier: Notifier, event: dict[str, Any], target: str | None) -> list[Planned]:
    """The deliveries of a past event, for redrive (``target``: the dead letter's) and replay
    (None: its webhooks), built exactly as the first time; so they keep their ids."""
    is_trigger = event.get("event") == "TriggerExceeded"
    if target is None:
        return notifier.trigger_webhooks(event, None) if is_trigger else []
    if target.startswith(MAILTO):
        return rebuild_email(notifier, event, target.removeprefix(MAILTO), is_trigger=is_trigger)
    if not is_trigger:
        return [portal_webhook(stored_portal_event(event), target, event)]
    if target == notifier.webhook.target_path:
        return [notifier.monitor_webhook(event)]
    return [notifier.org_webhook(event, target)]


def rebuild_email(
    notifier: Notifier, event: dict[str, Any], to: str, *, is_trigger: bool
) -> list[Planned]:
    if notifier.email is None:
        return []
    if is_trigger:
        return [notifier.email.trigger(event, to)]
    if event.get("event") == DIGEST_EVENT:
        return [notifier.email.digest(to, event["org_id"], event["requests"])]
    return [notifier.email.portal(stored_portal_event(event), to, event)]


def stored_portal_event(payload: Mapping[str, Any]) -> PortalEvent:
    """A portal event back from the payload a delivery job carries."""
    return PortalEvent(payload["event"], payload["org_id"], payload["data"], payload["id"])


def portal_webhook(event: PortalEvent, url: str, payload: Mapping[str, Any]) -> DeliveryJob:
    """The org's webhook gets ``{"event", "data"}`` exactly as received."""
    request = WebhookRequest(event.id, "POST", url, orjson.dumps(event.webhook_body()), {})
    return DeliveryJob.for_request(request, payload)


def option(options: Mapping[str, Any] | None, name: str, field: str) -> str | None:
    """``options[name][field]`` of an org's event_options, when it is a non-empty string."""
    value = ((options or {}).get(name) or {}).get(field)
    return value if isinstance(value, str) and value else None


def no_recipient(template: str, event_id: str) -> None:
    """Nothing to send: counted and logged (by event id, never the key). Debug, not info: keys
    without a developer address are common, and a line per trigger cost 6% of the worker's
    time in the email bench; /metrics counts them."""
    NO_RECIPIENT.labels(template=template).inc()
    log.debug("no email address for %s id=%s: nothing sent", template, event_id)
