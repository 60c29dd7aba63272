"""pipeline.delivery.deliverer: attempts under an endpoint's breaker and concurrency bound.

The channel here is a stand-in that fails on purpose; the real sinks have their own tests
against real servers."""

from __future__ import annotations

import asyncio

from pipeline.delivery.breaker import BreakerPolicy
from pipeline.delivery.channels import WebhookChannel
from pipeline.delivery.deliverer import DeadLetter, Deliverer, RetryLater
from pipeline.delivery.jobs import DeliveryJob
from pipeline.delivery.retry import RetryPolicy
from pipeline.errors import RetriableDeliveryError
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
