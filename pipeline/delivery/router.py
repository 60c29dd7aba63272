"""Where each delivery outcome goes, made durable before its record is acknowledged:
delivered (counted), a retry tier (by attempts made), or notifications.dlq.

Once routed, an outcome is counted per endpoint, a delivered trigger's delay from its event
time observed, and both remembered for the ops page (:attr:`DeliveryRouter.activity`).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time

from prometheus_client import Counter, Histogram

from pipeline.delivery.activity import (
    TRIGGER_EVENT,
    DeliveryActivity,
    OutcomeKind,
    endpoint_label,
)
from pipeline.delivery.deliverer import DeadLetter, Delivered, Deliverer, Outcome, RetryLater
from pipeline.delivery.jobs import DeliveryJob, dead_letter
from pipeline.delivery.planning import Planned, Unsendable
from pipeline.engine import Topic
from pipeline.engine.clients import broker_unwell
from pipeline.records.rejections import loggable
from pipeline.service.metrics import (
    ENDPOINT_OUTCOMES,
    TRIGGER_TO_DELIVERY,
    delivery_outcome,
)
from pipeline.service.redaction import target

log = logging.getLogger(__name__)

#: Seconds between sends of an outcome the brokers did not take (after aiokafka's own retries),
#: before the last try whose failure is the record's.
DURABLE_BACKOFF = (1, 2, 5, 10, 30, 60, 60, 60, 60, 60)


@functools.cache
def endpoint_outcome(endpoint: str, outcome: OutcomeKind) -> Counter:
    """The counter child of one (endpoint, outcome), looked up once (as delivery_outcome)."""
    return ENDPOINT_OUTCOMES.labels(endpoint=endpoint, outcome=outcome)


@functools.cache
def trigger_to_delivery(channel: str) -> Histogram:
    return TRIGGER_TO_DELIVERY.labels(channel=channel)


class DeliveryRouter:
    """Sends each outcome where it belongs and waits until it is durable."""

    def __init__(
        self, tiers: tuple[Topic, ...], dlq: Topic, activity: DeliveryActivity | None = None
    ) -> None:
        self._tiers = tiers
        self._dlq = dlq
        #: What this worker's deliveries did, for the ops page.
        self.activity = activity if activity is not None else DeliveryActivity()

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
            self._routed("delivered", job)
            return
        if isinstance(outcome, RetryLater) and self._tiers:
            tier = self._tiers[min(max(job.attempts - 1, 0), len(self._tiers) - 1)]
            await self._durably(tier, job.event_id, job.to_bytes())
            self._routed("retrying", job)
            return
        reason = outcome.reason if isinstance(outcome, DeadLetter) else job.last_error
        log.warning(
            "dead-lettered id=%s target=%s status=%s reason=%s",
            job.event_id,
            target(job.url),
            job.last_status,
            loggable(reason),
        )
        await self._durably(self._dlq, job.event_id, dead_letter(job, reason))
        self._routed("dead_lettered", job, reason)

    def _routed(self, kind: OutcomeKind, job: DeliveryJob, reason: str = "") -> None:
        """Counted and remembered once durable: an outcome whose send failed is routed
        again when its record is, and counted then."""
        now = time.time()
        endpoint = endpoint_label(job)
        endpoint_outcome(endpoint, kind).inc()
        self.activity.record(kind, job, now, reason, endpoint=endpoint)
        if kind == "delivered" and job.event.get("event") == TRIGGER_EVENT:
            ts = job.event.get("ts")
            if isinstance(ts, int | float) and not isinstance(ts, bool):
                trigger_to_delivery(job.channel).observe(max(0.0, now - ts))

    async def _durably(self, topic: Topic, key: str, value: bytes) -> None:
        """Send an outcome; while the brokers are unwell, again for some minutes: the outcome
        of a delivery made must not be lost, and its record is not acknowledged until then."""
        for wait in DURABLE_BACKOFF:
            try:
                await (await topic.send(key.encode(), value))
                return
            except Exception as exc:
                if not broker_unwell(exc):
                    raise
                log.warning(
                    "a delivery outcome was not taken topic=%s error=%s; sending again in %ss",
                    topic.name,
                    type(exc).__name__,
                    wait,
                )
            await asyncio.sleep(wait)  # a backoff while the brokers recover
        await (await topic.send(key.encode(), value))
