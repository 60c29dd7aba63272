"""The delivery engine: one attempt of a job, under the endpoint's breaker and concurrency
bounds, turned into an outcome the agents route (delivered, retry later, or dead-letter).

It also tells /metrics and the ops page what only it knows: each endpoint's attempts in flight
and its breaker's state since when. Both are kept as the attempts go (a counter around each
send, a comparison of breaker states after each outcome), so asking costs nothing per delivery.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import time
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

from prometheus_client import Gauge

from pipeline.delivery.activity import STATE_VALUES, EndpointState, endpoint_label, joined
from pipeline.delivery.breaker import BreakerPolicy, BreakerState, EndpointHealth
from pipeline.delivery.channels import Channel
from pipeline.delivery.jobs import DeliveryJob
from pipeline.delivery.retry import GiveUp, RetryPolicy, decide
from pipeline.errors import DeliveryError
from pipeline.service.metrics import BREAKER_SINCE, BREAKER_STATE, DELIVERIES_IN_FLIGHT

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


@functools.cache
def in_flight_gauge(endpoint: str) -> Gauge:
    """The gauge child of one endpoint (``labels`` locks and checks on every call)."""
    return DELIVERIES_IN_FLIGHT.labels(endpoint=endpoint)


@dataclass(slots=True)
class _Watched:
    """What is told of one endpoint besides its breaker."""

    #: Its name in metrics and snapshots (host only: see pipeline.delivery.activity).
    label: str
    #: When its breaker entered its current state; first seen, for one that never moved.
    since: float
    gauge: Gauge
    in_flight: int = 0

    def moved(self, state: BreakerState, now: float) -> None:
        self.since = now
        BREAKER_STATE.labels(endpoint=self.label).set(STATE_VALUES[state])
        BREAKER_SINCE.labels(endpoint=self.label).set(now)


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
        self._watched: dict[str, _Watched] = {}
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
            self._watch(endpoint, job, now)
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
            allowed, admitted = health.admit(now)
            self._set_health(endpoint, admitted, now)
            if not allowed:
                return RetryLater(replace(job, due=health.retry_at(now) or now))
            error: DeliveryError | None = None
            status: int | None = None
            watched = self._watched[endpoint]
            watched.in_flight += 1
            watched.gauge.inc()
            try:
                status = await channel.send(job)
            except DeliveryError as exc:
                error = exc
            finally:
                watched.in_flight -= 1
                watched.gauge.dec()
        now = self._clock()
        if error is None or error.endpoint_failed:
            self._set_health(endpoint, self._health[endpoint].record(error is None, now), now)
        return self._after(job.attempted(now, error, status), error, now)

    def endpoint_states(self, now: float) -> dict[str, EndpointState]:
        """Each endpoint's breaker (since when, next probe) and attempts in flight, by its
        label; endpoints that share a label (URLs differing only in credentials) as one."""
        states: dict[str, EndpointState] = {}
        for endpoint, health in self._health.items():
            watched = self._watched[endpoint]
            state = EndpointState(
                health.state, watched.since, health.retry_at(now), watched.in_flight
            )
            states[watched.label] = joined(states.get(watched.label), state)
        return states

    def _watch(self, endpoint: str, job: DeliveryJob, now: float) -> None:
        label = endpoint_label(job)
        watched = self._watched[endpoint] = _Watched(label, now, in_flight_gauge(label))
        watched.moved("closed", now)  # into the gauges: a new breaker is closed from now

    def _set_health(self, endpoint: str, health: EndpointHealth, now: float) -> None:
        """Keep the endpoint's breaker, and tell the gauges when it moved."""
        before = self._health[endpoint]
        self._health[endpoint] = health
        if before.state == health.state == "closed":
            return  # nearly every delivery: nothing to tell
        if (health.state, health.opened_at, health.probe_at) != (
            before.state,
            before.opened_at,
            before.probe_at,
        ):
            self._watched[endpoint].moved(health.state, now)

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
