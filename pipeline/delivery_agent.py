"""The delivery agent: quota.triggers in, webhooks out, concurrently.

Thin wiring: decode the event, resolve its targets, build requests, send them through the sink.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

from pipeline.app import Pipeline
from pipeline.errors import DeliveryError, InvalidRecord
from pipeline.models import decode_json_object
from pipeline.sinks.webhook import WebhookSink
from pipeline.streams import send_rejection
from pipeline.webhooks import WebhookRequest, default_trigger_body

log = logging.getLogger(__name__)

BATCH_MAX = 500
BATCH_WITHIN = 0.02


def trigger_requests(event: dict[str, Any], pipeline: Pipeline) -> list[WebhookRequest]:
    """The webhook requests one TriggerExceeded event makes."""
    webhook = pipeline.settings.monitor.configuration
    if not webhook.target_path:
        return []
    return [
        WebhookRequest(
            event_id=event["id"],
            method=webhook.method,
            url=webhook.target_path,
            body=default_trigger_body(event),
            extra_headers=webhook.header_map,
        )
    ]


def decode_trigger(raw: bytes | None) -> dict[str, Any]:
    event = decode_json_object(raw)
    for field in ("id", "event", "org", "key", "trigger_limit", "usage_percentage"):
        if field not in event:
            raise InvalidRecord(f"trigger event has no {field}")
    return event


def attach_delivery_agent(pipeline: Pipeline) -> None:
    """Register the delivery agent, which owns the webhook sink while it runs."""
    delivery = pipeline.settings.delivery
    sink = WebhookSink(
        timeout=delivery.timeout,
        connect_timeout=delivery.connect_timeout,
        signing_secrets=[secret.get_secret_value() for secret in delivery.signing_secrets],
        concurrency=delivery.concurrency,
    )

    async def deliver(request: WebhookRequest) -> None:
        try:
            status = await sink.send(request)
        except DeliveryError as exc:
            log.warning(
                "webhook failed id=%s url=%s status=%s error=%s",
                request.event_id,
                request.url,
                exc.status,
                exc,
            )
        else:
            log.info(
                "webhook delivered id=%s url=%s status=%s", request.event_id, request.url, status
            )

    @pipeline.app.agent(pipeline.topics.triggers, name="delivery")
    async def delivery_agent(stream: Any) -> AsyncIterator[None]:
        async with sink:
            async for events in stream.take_events(BATCH_MAX, within=BATCH_WITHIN):
                requests: list[WebhookRequest] = []
                for event in events:
                    try:
                        requests.extend(trigger_requests(decode_trigger(event.value), pipeline))
                    except InvalidRecord as exc:
                        await send_rejection(pipeline, event, exc.reason)
                await asyncio.gather(*(deliver(request) for request in requests))
                yield None
