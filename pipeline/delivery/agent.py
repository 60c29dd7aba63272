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

import asyncio
import logging
import time
from collections.abc import Iterable
from typing import Any

import faust
from faust.exceptions import DecodeError
from pydantic import SecretStr

from pipeline.delivery.breaker import BreakerPolicy
from pipeline.delivery.channels import Channel, EmailChannel, WebhookChannel
from pipeline.delivery.cooldown import Cooldown
from pipeline.delivery.deliverer import DeadLetter, Delivered, Deliverer, Outcome, RetryLater
from pipeline.delivery.jobs import DeliveryJob, dead_letter
from pipeline.delivery.planning import Notifier, Planned, Unsendable
from pipeline.delivery.retry import RetryPolicy
from pipeline.email.factory import build_email_sink
from pipeline.engine.app import RAW, Pipeline, retry_tier_name
from pipeline.engine.clients import broker_unwell
from pipeline.engine.runs import handle_each, rejecter, send_rejection
from pipeline.engine.tables import acting_for
from pipeline.errors import InvalidRecord
from pipeline.portal.agent import attach_portal_agent
from pipeline.records.checks import decode_json_object
from pipeline.records.rejections import loggable
from pipeline.service.metrics import delivery_outcome
from pipeline.service.redaction import target
from pipeline.webhooks.sink import WebhookSink

log = logging.getLogger(__name__)

#: Records taken from a feed at a time (each is then handled on its own).
RECORDS_PER_TAKE = 500
#: Seconds between sends of an outcome the brokers did not take (after aiokafka's own retries),
#: before the last try whose failure is the record's.
DURABLE_BACKOFF = (1, 2, 5, 10, 30, 60, 60, 60, 60, 60)


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


class DeliveryRouter:
    """Sends each outcome where it belongs and waits until it is durable."""

    def __init__(self, pipeline: Pipeline, tiers: list[faust.TopicT]) -> None:
        self._pipeline = pipeline
        self._tiers = tiers

    async def dispatch(self, deliverer: Deliverer, planned: list[Planned]) -> None:
        """Attempt every delivery of one event and route each outcome; returns once each is
        durable (delivered, scheduled or dead-lettered)."""
        if len(planned) == 1:  # the usual case, without a task per target
            await self._dispatch_one(deliverer, planned[0])
            return
        # Targets of one event side by side: a dead endpoint must not delay a healthy one.
        await asyncio.gather(*(self._dispatch_one(deliverer, job) for job in planned))

    async def _dispatch_one(self, deliverer: Deliverer, planned: Planned) -> None:
        if isinstance(planned, Unsendable):
            job = planned.job.attempted(time.time(), None, None)
            await self.route(DeadLetter(job, planned.reason))
            return
        await self.route(await deliverer.attempt(planned))

    async def route(self, outcome: Outcome) -> None:
        job = outcome.job
        delivery_outcome(job.channel, type(outcome).__name__).inc()
        if isinstance(outcome, Delivered):
            # Debug, not info: at thousands per second a line each costs more than the send.
            # /metrics counts them.
            log.debug(
                "delivered id=%s target=%s status=%s attempts=%s",
                job.event_id,
                target(job.url),
                job.last_status,
                job.attempts,
            )
            return
        if isinstance(outcome, RetryLater) and self._tiers:
            tier = self._tiers[min(max(job.attempts - 1, 0), len(self._tiers) - 1)]
            await self._durably(tier, job.event_id, job.to_bytes())
            return
        reason = outcome.reason if isinstance(outcome, DeadLetter) else job.last_error
        log.warning(
            "dead-lettered id=%s target=%s status=%s reason=%s",
            job.event_id,
            target(job.url),
            job.last_status,
            loggable(reason),
        )
        await self._durably(self._pipeline.topics.dlq, job.event_id, dead_letter(job, reason))

    async def _durably(self, topic: faust.TopicT, key: str, value: bytes) -> None:
        """Send an outcome; while the brokers are unwell, again for some minutes: the outcome
        of a delivery made must not be lost, and its record is not acknowledged until then."""
        name = topic.get_topic_name()
        for wait in DURABLE_BACKOFF:
            try:
                await self._send(name, key, value)
                return
            except Exception as exc:
                if not broker_unwell(exc):
                    raise
                log.warning(
                    "a delivery outcome was not taken topic=%s error=%s; sending again in %ss",
                    name,
                    type(exc).__name__,
                    wait,
                )
            await asyncio.sleep(wait)  # a backoff while the brokers recover
        await self._send(name, key, value)

    async def _send(self, topic: str, key: str, value: bytes) -> None:
        # Straight to the producer: the record is bytes already, and faust's Topic.send (a
        # FutureMessage, its channel, serializers that do nothing) cost as much again.
        # The second await is the broker's acknowledgement, not just the buffering.
        producer = self._pipeline.app.producer
        sent = await producer.send(topic, key.encode(), value, None, None, None)
        await sent


def revealed(secrets: Iterable[SecretStr]) -> list[str]:
    return [secret.get_secret_value() for secret in secrets]


def attach_delivery_agents(pipeline: Pipeline) -> None:
    """Register the delivery agent and one agent per retry tier."""
    app, settings = pipeline.app, pipeline.settings.delivery
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
    tiers = [
        app.topic(
            retry_tier_name(pipeline.settings, index),
            schema=RAW,
            internal=True,
            partitions=pipeline.settings.kafka.partitions,
        )
        for index in range(len(settings.retry_schedule))
    ]
    router = DeliveryRouter(pipeline, tiers)
    notifier = Notifier.from_settings(pipeline.settings)
    cooldown = Cooldown(pipeline.settings.monitor.configuration.event_timeout)

    async def follow_orgs() -> None:
        await pipeline.org_directory.follow(pipeline.settings)

    app.task(follow_orgs)

    async def close_channels(app: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        await deliverer.stop()

    app.on_before_shutdown.connect(close_channels)

    @app.agent(pipeline.topics.triggers, name="delivery")
    async def delivery_agent(stream: Any) -> None:
        # faust subscribes this agent to the topic; the records come in bulk, through the
        # feed (pipeline.engine.feeds), not through ``stream``: faust's per-record path cost
        # a quarter of this worker's time.
        await deliverer.start()
        await pipeline.org_directory.ready.wait()  # every org known at start-up, first

        async def handle(event: Any) -> None:
            try:
                trigger = decode_trigger(event.value)
            except InvalidRecord as exc:
                await send_rejection(pipeline, event, exc.reason)
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

        await handle_each(
            pipeline.triggers_feed,
            app.consumer,
            handle,
            limit=settings.events_in_flight,
            max_records=RECORDS_PER_TAKE,
            reject=rejecter(pipeline),
        )

    for index, tier in enumerate(tiers):
        attach_retry_tier(pipeline, tier, index, deliverer=deliverer, router=router)
    attach_portal_agent(pipeline, notifier=notifier, deliverer=deliverer, router=router)


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
    try:
        with acting_for(source):
            stored = pipeline.tables.sessions.get(trigger["key"])
        email = stored.get("developer_email") if isinstance(stored, dict) else None
    except (DecodeError, ValueError):  # a stored session that does not decode: no address
        return None
    return email if isinstance(email, str) and email else None


def attach_retry_tier(
    pipeline: Pipeline,
    tier: faust.TopicT,
    index: int,
    *,
    deliverer: Deliverer,
    router: DeliveryRouter,
) -> None:
    """An agent that attempts each job of one tier when it is due."""
    settings = pipeline.settings.delivery

    @pipeline.app.agent(tier, name=f"retry-{index}")
    async def retry_agent(stream: Any) -> None:
        # Subscribed through faust; the jobs come in bulk through the tier's feed.
        await deliverer.start()

        async def handle(event: Any) -> None:
            try:
                job = DeliveryJob.from_bytes(event.value)
            except InvalidRecord as exc:
                await send_rejection(pipeline, event, exc.reason)
                return
            await router.route(await deliverer.attempt(job))

        await handle_each(
            pipeline.retry_feeds[index],
            pipeline.app.consumer,
            handle,
            limit=settings.events_in_flight,
            max_records=RECORDS_PER_TAKE,
            reject=rejecter(pipeline),
            due=job_due,
        )
