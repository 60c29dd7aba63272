"""The delivery engine: one attempt of a job, under the endpoint's breaker and concurrency
bounds, turned into an outcome the agents route (delivered, retry later, or dead-letter)."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

from pipeline.delivery.breaker import BreakerPolicy, EndpointHealth
from pipeline.delivery.channels import Channel
from pipeline.delivery.jobs import DeliveryJob
from pipeline.delivery.retry import GiveUp, RetryPolicy, decide
from pipeline.errors import DeliveryError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Delivered:
    job: DeliveryJob


@dataclass(frozen=True)
class RetryLater:
    job: DeliveryJob  # with ``due`` set


@dataclass(frozen=True)
class DeadLetter:
    job: DeliveryJob
    reason: str


Outcome = Delivered | RetryLater | DeadLetter


class Deliverer:
    """Attempts jobs; keeps per-endpoint health and concurrency in this worker."""

    def __init__(
        self,
        channels: Mapping[str, Channel],
        *,
        retry: RetryPolicy,
        breaker: BreakerPolicy,
        per_endpoint_concurrency: int,
        max_payload_bytes: int,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._channels = dict(channels)
        self._retry = retry
        self._breaker = breaker
        self._max_payload_bytes = max_payload_bytes
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        self._clock = clock
        self._health: dict[str, EndpointHealth] = {}
        self._slots: defaultdict[str, asyncio.Semaphore] = defaultdict(
            lambda: asyncio.Semaphore(per_endpoint_concurrency)
        )

    async def start(self) -> None:
        """Open every channel's connections (idempotent: each agent calls it)."""
        for channel in self._channels.values():
            await channel.start()

    async def stop(self) -> None:
        for channel in self._channels.values():
            await channel.stop()

    def _paused(self, job: DeliveryJob, endpoint: str, now: float) -> RetryLater | None:
        """Reschedule without an attempt while the endpoint's breaker is open, so it is probed,
        not hammered (and nothing queues behind it)."""
        health = self._health.get(endpoint)
        if health is None:  # not setdefault: that would build a breaker on every attempt
            health = self._health[endpoint] = EndpointHealth(policy=self._breaker)
        if health.allows(now):
            return None
        return RetryLater(replace(job, due=health.retry_at(now) or now))

    async def attempt(self, job: DeliveryJob) -> Outcome:
        """One attempt (or none, while the endpoint's breaker is open)."""
        now = self._clock()
        if len(job.body) > self._max_payload_bytes:
            reason = f"payload of {len(job.body)} bytes exceeds {self._max_payload_bytes}"
            return DeadLetter(job, reason)
        channel = self._channels.get(job.channel)
        if channel is None:
            return DeadLetter(job, f"no {job.channel} channel is configured")
        endpoint = channel.endpoint(job)
        if (paused := self._paused(job, endpoint, now)) is not None:
            return paused
        async with self._slots[endpoint]:
            # Asked again once a slot is free: the breaker may have opened while this job
            # waited behind a slow endpoint's attempts, and then the wait must end here.
            now = self._clock()
            health = self._health[endpoint]
            allowed, self._health[endpoint] = health.admit(now)
            if not allowed:
                return RetryLater(replace(job, due=health.retry_at(now) or now))
            error: DeliveryError | None = None
            status: int | None = None
            try:
                status = await channel.send(job)
            except DeliveryError as exc:
                error = exc
        now = self._clock()
        if error is None or error.endpoint_failed:
            self._health[endpoint] = self._health[endpoint].record(error is None, now)
        return self._after(job.attempted(now, error, status), error, now)

    def _after(self, job: DeliveryJob, error: DeliveryError | None, now: float) -> Outcome:
        """Delivered, or what the retry policy makes of the failure."""
        if error is None:
            return Delivered(job)
        decision = decide(
            error, attempts_made=job.attempts, policy=self._retry, now=now, rng=self._rng
        )
        if isinstance(decision, GiveUp):
            return DeadLetter(job, decision.reason)
        return RetryLater(replace(job, due=decision.due))
