"""Where each delivery outcome goes, made durable before its record is acknowledged:
delivered (counted), a retry tier (by attempts made), or notifications.dlq."""

from __future__ import annotations

import asyncio
import logging
import time

from pipeline.delivery.deliverer import DeadLetter, Delivered, Deliverer, Outcome, RetryLater
from pipeline.delivery.jobs import dead_letter
from pipeline.delivery.planning import Planned, Unsendable
from pipeline.engine import Topic
from pipeline.engine.clients import broker_unwell
from pipeline.records.rejections import loggable
from pipeline.service.metrics import delivery_outcome
from pipeline.service.redaction import target

log = logging.getLogger(__name__)

#: Seconds between sends of an outcome the brokers did not take (after aiokafka's own retries),
#: before the last try whose failure is the record's.
DURABLE_BACKOFF = (1, 2, 5, 10, 30, 60, 60, 60, 60, 60)


class DeliveryRouter:
    """Sends each outcome where it belongs and waits until it is durable."""

    def __init__(self, tiers: tuple[Topic, ...], dlq: Topic) -> None:
        self._tiers = tiers
        self._dlq = dlq

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
        await self._durably(self._dlq, job.event_id, dead_letter(job, reason))

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
