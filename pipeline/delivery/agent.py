"""The delivery agents: quota.triggers in, webhooks out; failures through retry tiers to
notifications.dlq.

Deliveries run concurrently (bounded per worker by ``delivery.concurrency`` and per endpoint by
``delivery.per_endpoint_concurrency``). A source record is acknowledged, and so its offset can
commit, only once the outcome of each of its deliveries is durable: delivered, written to a
retry tier, or dead-lettered. Retry tiers are internal topics, one per step of
``delivery.retry_schedule``; a tier's agent waits for each job's due time, so retries never hold
back fresh deliveries or other tiers.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any

from pydantic import SecretStr

from pipeline.delivery.breaker import BreakerPolicy
from pipeline.delivery.channels import Channel, EmailChannel, WebhookChannel
from pipeline.delivery.cooldown import Cooldown
from pipeline.delivery.deliverer import Deliverer
from pipeline.delivery.jobs import DeliveryJob
from pipeline.delivery.planning import Notifier, Planned
from pipeline.delivery.retry import RetryPolicy
from pipeline.delivery.router import DeliveryRouter
from pipeline.email.factory import build_email_sink
from pipeline.errors import InvalidRecord
from pipeline.records.checks import decode_json_object
from pipeline.webhooks.sink import WebhookSink
from pipeline.wiring import Pipeline

log = logging.getLogger(__name__)

#: Records taken from a feed at a time (each is then handled on its own).
RECORDS_PER_TAKE = 500


def decode_trigger(raw: bytes | None) -> dict[str, Any]:
    """A quota.triggers value: the fields its deliveries read must be there, of their types."""
    event = decode_json_object(raw)
    for field in ("id", "event", "org", "key", "trigger_limit"):
        if not isinstance(event.get(field), str):
            raise InvalidRecord(f"trigger event has no {field} string")
    if not event["id"]:
        raise InvalidRecord("trigger event has an empty id")
    usage = event.get("usage_percentage")
    if type(usage) not in (int, float):
        raise InvalidRecord("trigger event has no usage_percentage number")
    return event


def revealed(secrets: Iterable[SecretStr]) -> list[str]:
    return [secret.get_secret_value() for secret in secrets]


def build_deliverer(pipeline: Pipeline) -> Deliverer:
    """The deliverer of every agent that delivers: the webhook channel, and email's when on."""
    settings = pipeline.settings.delivery
    sink = WebhookSink(
        timeout=settings.timeout,
        connect_timeout=settings.connect_timeout,
        signing_secrets=revealed(settings.signing_secrets),
        target_signing_secrets={
            prefix: revealed(secrets) for prefix, secrets in settings.target_signing_secrets.items()
        },
        concurrency=settings.concurrency,
        per_endpoint_concurrency=settings.per_endpoint_concurrency,
        allow_networks=settings.allow_networks,
    )
    channels: dict[str, Channel] = {"webhook": WebhookChannel(sink)}
    backend = pipeline.settings.email_backend
    if backend.enable_email_notifications:
        email_sink = build_email_sink(backend, timeout=settings.timeout)
        channels["email"] = EmailChannel(email_sink, backend.code)
    deliverer = Deliverer(
        channels,
        retry=RetryPolicy(
            schedule=settings.retry_schedule, min_rate_limit_wait=settings.rate_limit_wait
        ),
        breaker=BreakerPolicy(),
        per_endpoint_concurrency=settings.per_endpoint_concurrency,
        max_payload_bytes=settings.max_payload_bytes,
    )
    pipeline.engine.on_stop(deliverer.stop)
    return deliverer


def attach_delivery_agents(
    pipeline: Pipeline, *, deliverer: Deliverer, router: DeliveryRouter, notifier: Notifier
) -> None:
    """Register the delivery agent (quota.triggers) and one agent per retry tier."""
    engine, settings = pipeline.engine, pipeline.settings.delivery
    cooldown = Cooldown(pipeline.settings.monitor.configuration.event_timeout)

    async def first() -> None:
        await deliverer.start()
        await pipeline.org_directory.ready.wait()  # every org known at start-up, first

    async def handle(event: Any) -> None:
        try:
            trigger = decode_trigger(event.value)
        except InvalidRecord as exc:
            await pipeline.reject(event, exc.reason)
        else:
            await router.dispatch(deliverer, plan_trigger(event, trigger))

    def plan_trigger(event: Any, trigger: dict[str, Any]) -> list[Planned]:
        org_options = pipeline.org_directory.get(trigger["org"])
        now = time.time()
        planned = []
        for job in notifier.trigger_webhooks(trigger, org_options):
            if isinstance(job, DeliveryJob) and not cooldown.admit(
                job.method, job.url, job.body, now
            ):
                log.info("cooldown: identical webhook not re-sent id=%s", job.event_id)
                continue
            planned.append(job)
        if notifier.email is None:
            return planned  # and no session lookup for an address nobody mails
        return planned + notifier.trigger_emails(
            trigger,
            developer_email=developer_email(pipeline, event, trigger),
            org_options=org_options,
        )

    # In bulk (pipeline.engine.feeds): faust's per-record path cost a quarter of this worker.
    engine.each_agent(
        pipeline.topics.triggers,
        pipeline.feeds.triggers,
        handle,
        name="delivery",
        limit=settings.events_in_flight,
        max_records=RECORDS_PER_TAKE,
        reject=pipeline.reject,
        before=first,
    )
    for index in range(len(pipeline.topics.retry_tiers)):
        attach_retry_tier(pipeline, index, deliverer=deliverer, router=router)


def job_due(raw: bytes | None) -> float:
    """When a retry-tier record is due; now for a record that is not a job (it is rejected)."""
    try:
        return DeliveryJob.from_bytes(raw).due
    except Exception:  # any bad record: its handler rejects it, with the reason
        return 0.0


def developer_email(pipeline: Pipeline, source: Any, trigger: dict[str, Any]) -> str | None:
    """The key's developer address from its session. quota.triggers is co-partitioned with
    quota.sessions (same partition count, keyed by the key), so the session is local."""
    if trigger.get("subject") != "key" or not trigger["key"]:
        return None
    stored = pipeline.tables.sessions.get(trigger["key"], source)
    email = stored.get("developer_email") if isinstance(stored, dict) else None
    return email if isinstance(email, str) and email else None


def attach_retry_tier(
    pipeline: Pipeline, index: int, *, deliverer: Deliverer, router: DeliveryRouter
) -> None:
    """An agent that attempts each job of one tier when it is due."""

    async def handle(event: Any) -> None:
        try:
            job = DeliveryJob.from_bytes(event.value)
        except InvalidRecord as exc:
            await pipeline.reject(event, exc.reason)
            return
        await router.route(await deliverer.attempt(job))

    pipeline.engine.each_agent(
        pipeline.topics.retry_tiers[index],
        pipeline.feeds.retry_tiers[index],
        handle,
        name=f"retry-{index}",
        limit=pipeline.settings.delivery.events_in_flight,
        max_records=RECORDS_PER_TAKE,
        reject=pipeline.reject,
        due=job_due,
        before=deliverer.start,
    )
