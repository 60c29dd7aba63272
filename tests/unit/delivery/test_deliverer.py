"""pipeline.delivery.deliverer: attempts under an endpoint's breaker and concurrency bound.

The channel here is a stand-in that fails on purpose; the real sinks have their own tests
against real servers."""

from __future__ import annotations

import asyncio
import dataclasses

from pipeline.delivery.activity import EndpointState
from pipeline.delivery.breaker import BreakerPolicy
from pipeline.delivery.channels import WebhookChannel, endpoint_of
from pipeline.delivery.deliverer import DeadLetter, Deliverer, RetryLater
from pipeline.delivery.jobs import DeliveryJob
from pipeline.delivery.retry import RetryPolicy
from pipeline.errors import RetriableDeliveryError
from pipeline.service.metrics import REGISTRY
from pipeline.webhooks.sink import WebhookSink


class FailingChannel:
    """Every send fails; the first one only once ``release`` is set, so the other jobs queue
    behind it for the endpoint's slot."""

    def __init__(self) -> None:
        self.sends = 0
        self.started = asyncio.Event()
        self.release = asyncio.Event()

    async def start(self) -> None:
        """Nothing to open."""

    async def stop(self) -> None:
        """Nothing to close."""

    def endpoint(self, job: DeliveryJob) -> str:
        return "https://slow.example"

    async def send(self, job: DeliveryJob) -> int | None:
        self.sends += 1
        self.started.set()
        await self.release.wait()
        raise RetriableDeliveryError("timed out")


def job(i: int) -> DeliveryJob:
    return DeliveryJob(f"evt_{i}", "POST", "https://slow.example/hook", b"{}", {}, {})


async def test_jobs_queued_behind_a_failing_endpoint_stop_once_its_breaker_opens() -> None:
    channel = FailingChannel()
    deliverer = Deliverer(
        {"webhook": channel},
        retry=RetryPolicy(schedule=(60,)),
        breaker=BreakerPolicy(min_requests=10, failure_ratio=0.7),
        per_endpoint_concurrency=1,
        max_payload_bytes=1024,
    )

    attempts = asyncio.gather(*(deliverer.attempt(job(i)) for i in range(30)))
    # The first send has started, so the other 29 jobs already wait for the endpoint's slot.
    await channel.started.wait()
    channel.release.set()
    outcomes = await attempts

    # Ten failures open the breaker; the twenty jobs waiting for the slot then go back to the
    # retry tiers without an attempt, instead of each waiting out the slow endpoint.
    assert channel.sends == 10
    assert all(isinstance(outcome, RetryLater) for outcome in outcomes)
    assert sum(outcome.job.attempts == 0 for outcome in outcomes) == 20


async def test_refused_targets_are_dead_lettered_at_once_and_never_open_the_breaker() -> None:
    # The real webhook channel: the SSRF guard refuses loopback (not allowed here) before any
    # connection is made.
    sink = WebhookSink(timeout=5, connect_timeout=1)
    deliverer = Deliverer(
        {"webhook": WebhookChannel(sink)},
        retry=RetryPolicy(schedule=(60,)),
        breaker=BreakerPolicy(min_requests=10, failure_ratio=0.7),
        per_endpoint_concurrency=4,
        max_payload_bytes=1024,
    )
    await deliverer.start()
    try:
        refused = [
            DeliveryJob(f"evt_{i}", "POST", "http://127.0.0.1:9/hook", b"{}", {}, {})
            for i in range(44)
        ]
        outcomes = await asyncio.gather(*(deliverer.attempt(job) for job in refused))
    finally:
        await deliverer.stop()

    assert all(isinstance(outcome, DeadLetter) for outcome in outcomes)
    assert all(outcome.job.attempts == 1 for outcome in outcomes)
    assert all("delivery.allow_networks" in outcome.reason for outcome in outcomes)


# --- what the deliverer tells /metrics and the ops page ----------------------------------------


class GatedChannel:
    """Each send waits for ``gate``, then succeeds or fails as ``ok`` says at that moment."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.sending = 0
        self.ok = True
        self._sending_changed = asyncio.Condition()

    async def start(self) -> None:
        """Nothing to open."""

    async def stop(self) -> None:
        """Nothing to close."""

    def endpoint(self, job: DeliveryJob) -> str:
        return endpoint_of(job.url)

    async def send(self, job: DeliveryJob) -> int | None:
        async with self._sending_changed:
            self.sending += 1
            self._sending_changed.notify_all()
        try:
            await self.gate.wait()
        finally:
            self.sending -= 1
        if not self.ok:
            raise RetriableDeliveryError("endpoint answered 503", status=503)
        return 204

    async def until_sending(self, count: int) -> None:
        """Return once ``count`` sends are waiting at the gate; fail after 5 s."""
        async with asyncio.timeout(5), self._sending_changed:
            await self._sending_changed.wait_for(lambda: self.sending == count)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


T0 = 1764331200.0
LABEL = "https://hooks.example:8443"


def gated(channel: GatedChannel, clock: Clock, concurrency: int = 8) -> Deliverer:
    return Deliverer(
        {"webhook": channel},
        retry=RetryPolicy(schedule=(60,)),
        breaker=BreakerPolicy(min_requests=10, failure_ratio=0.7, open_for=30),
        per_endpoint_concurrency=concurrency,
        max_payload_bytes=1024,
        clock=clock,
    )


def hook(i: int) -> DeliveryJob:
    return DeliveryJob(f"evt_{i}", "POST", "https://user:pw@hooks.example:8443/h", b"{}", {}, {})


def metric(name: str, endpoint: str = LABEL) -> float | None:
    return REGISTRY.get_sample_value(name, {"endpoint": endpoint})


async def test_attempts_in_flight_are_counted_per_endpoint_while_they_send() -> None:
    channel, clock = GatedChannel(), Clock()
    deliverer = gated(channel, clock, concurrency=3)
    before = metric("quota_pipeline_deliveries_in_flight") or 0.0

    attempts = asyncio.gather(*(deliverer.attempt(hook(i)) for i in range(5)))
    await channel.until_sending(3)

    # Three send (the endpoint's bound); two wait for a slot and are not in flight.
    assert deliverer.endpoint_states(clock.now) == {LABEL: EndpointState("closed", T0, None, 3)}
    assert metric("quota_pipeline_deliveries_in_flight") == before + 3
    channel.gate.set()
    await attempts
    assert deliverer.endpoint_states(clock.now)[LABEL].in_flight == 0
    assert metric("quota_pipeline_deliveries_in_flight") == before


async def test_the_breaker_is_reported_with_since_when_and_the_next_probe() -> None:
    channel, clock = GatedChannel(), Clock()
    channel.ok = False
    channel.gate.set()
    deliverer = gated(channel, clock)

    for i in range(10):
        clock.now = T0 + i
        await deliverer.attempt(hook(i))

    opened = T0 + 9
    assert deliverer.endpoint_states(T0 + 10) == {
        LABEL: EndpointState("open", opened, opened + 30, 0)
    }
    assert metric("quota_pipeline_breaker_state") == 2
    assert metric("quota_pipeline_breaker_state_since_timestamp_seconds") == opened

    # The probe, once due, is half open while it is in flight ...
    channel.ok, channel.gate = True, asyncio.Event()
    clock.now = opened + 30
    probe = asyncio.ensure_future(deliverer.attempt(hook(99)))
    await channel.until_sending(1)
    assert deliverer.endpoint_states(clock.now) == {
        LABEL: EndpointState("half_open", opened + 30, opened + 60, 1)
    }
    assert metric("quota_pipeline_breaker_state") == 1

    # ... and its success closes the breaker from the moment it answered.
    clock.now = opened + 31
    channel.gate.set()
    await probe
    assert deliverer.endpoint_states(opened + 40) == {
        LABEL: EndpointState("closed", opened + 31, None, 0)
    }
    assert metric("quota_pipeline_breaker_state") == 0
    assert metric("quota_pipeline_breaker_state_since_timestamp_seconds") == opened + 31


async def test_endpoints_differing_only_in_credentials_are_reported_as_one() -> None:
    channel, clock = GatedChannel(), Clock()
    deliverer = gated(channel, clock)
    channel.gate.set()
    await deliverer.attempt(dataclasses.replace(hook(1), url="https://a@hooks.example:8443/h"))
    channel.gate = asyncio.Event()
    clock.now = T0 + 5
    pending = asyncio.ensure_future(deliverer.attempt(hook(2)))
    await channel.until_sending(1)

    # Two breakers (one per scheme://user@host:port), one name without the credentials.
    assert deliverer.endpoint_states(clock.now) == {LABEL: EndpointState("closed", T0, None, 1)}
    channel.gate.set()
    await pending
