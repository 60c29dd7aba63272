"""pipeline.delivery.router: each outcome, once durable, counted per endpoint and remembered.

The topics are stand-ins that keep what is sent; the real producer has its integration tests."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import Any

import orjson
import pytest

from pipeline.delivery.deliverer import DeadLetter, Delivered, RetryLater
from pipeline.delivery.jobs import DeliveryJob
from pipeline.delivery.planning import Unsendable
from pipeline.delivery.router import DeliveryRouter
from pipeline.service.metrics import REGISTRY

KEY = "sk_live_router_0123456789abcd"
#: A host of this module's own, so that the counters other tests move do not count here.
URL = "https://router-test.example/hooks/secret-path"
ENDPOINT = "https://router-test.example"


class KeptTopic:
    """Keeps every record sent; ``refuse`` makes the next send fail as a bad record would."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.sent: list[tuple[bytes | None, bytes | None]] = []
        self.refuse = False

    async def send(self, key: bytes | None, value: bytes | None) -> asyncio.Future[None]:
        if self.refuse:
            raise ValueError("record too large")
        self.sent.append((key, value))
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


def trigger(**changes: Any) -> dict[str, Any]:
    event = {"id": "evt_r", "event": "TriggerExceeded", "org": "acme", "key": KEY}
    return {**event, "subject": "key", "trigger_limit": "80", "ts": time.time() - 3, **changes}


def job(event: dict[str, Any] | None = None, **changes: Any) -> DeliveryJob:
    event = event or trigger()
    made = DeliveryJob(event["id"], "POST", URL, b"{}", {}, event, attempts=1, last_status=200)
    return dataclasses.replace(made, **changes)


def counted(outcome: str, endpoint: str = ENDPOINT) -> float:
    labels = {"endpoint": endpoint, "outcome": outcome}
    return REGISTRY.get_sample_value("quota_pipeline_endpoint_deliveries_total", labels) or 0.0


def latencies(channel: str) -> float:
    labels = {"channel": channel}
    name = "quota_pipeline_trigger_to_delivery_seconds_count"
    return REGISTRY.get_sample_value(name, labels) or 0.0


def router(tiers: int = 1) -> tuple[DeliveryRouter, tuple[KeptTopic, ...], KeptTopic]:
    retry = tuple(KeptTopic(f"retry-{i}") for i in range(tiers))
    dlq = KeptTopic("dlq")
    return DeliveryRouter(retry, dlq), retry, dlq  # type: ignore[arg-type]


async def test_a_delivered_trigger_is_counted_timed_and_remembered() -> None:
    routing, _, _ = router()
    before, timed = counted("delivered"), latencies("webhook")

    await routing.route(Delivered(job()))

    assert counted("delivered") == before + 1
    assert latencies("webhook") == timed + 1
    snapshot = routing.activity.snapshot(time.time())
    [event] = snapshot["events"]
    assert event["key"] == "…abcd"
    assert [(t["target"], t["outcome"]) for t in event["targets"]] == [(ENDPOINT, "delivered")]
    assert snapshot["endpoints"][ENDPOINT]["delivered"] == 1
    assert KEY.encode() not in orjson.dumps(snapshot)
    assert b"secret-path" not in orjson.dumps(snapshot)


@pytest.mark.parametrize(
    "event",
    [
        {"id": "evt_p", "event": "key_request_event.created", "org_id": "acme", "data": {}},
        trigger(ts=None),
    ],
)
async def test_only_a_trigger_with_its_event_time_is_timed(event: dict[str, Any]) -> None:
    routing, _, _ = router()
    timed = latencies("webhook")

    await routing.route(Delivered(job(event)))

    assert latencies("webhook") == timed
    assert routing.activity.snapshot(0)["events"][0]["kind"] == event["event"]


async def test_a_retry_is_counted_once_its_tier_has_it() -> None:
    routing, (tier,), _ = router()
    before = counted("retrying")
    failed = job(last_status=503, last_error="endpoint answered 503", due=time.time() + 60)

    await routing.route(RetryLater(failed))

    assert len(tier.sent) == 1
    assert counted("retrying") == before + 1
    [target] = routing.activity.snapshot(0)["events"][0]["targets"]
    assert (target["outcome"], target["last_status"]) == ("retrying", 503)
    assert target["last_error"] == "endpoint answered 503"


async def test_without_retry_tiers_a_retry_is_dead_lettered() -> None:
    routing, _, dlq = router(tiers=0)
    before = counted("dead_lettered")

    await routing.route(RetryLater(job(last_error="timed out")))

    assert len(dlq.sent) == 1
    assert counted("dead_lettered") == before + 1
    assert routing.activity.snapshot(0)["endpoints"][ENDPOINT]["dead_lettered"] == 1


async def test_an_unsendable_email_is_dead_lettered_with_its_reason() -> None:
    routing, _, dlq = router()
    email = DeliveryJob("evt_r", "EMAIL", "mailto:dev@example.com", b"", {}, trigger())
    email = dataclasses.replace(email, channel="email")
    before = counted("dead_lettered", "email")

    await routing.dispatch(None, [Unsendable(email, "email template trigger_exceeded: boom")])  # type: ignore[arg-type]

    assert len(dlq.sent) == 1
    assert counted("dead_lettered", "email") == before + 1
    [target] = routing.activity.snapshot(0)["events"][0]["targets"]
    assert target["target"] == "mailto:d…@example.com"
    assert target["last_error"] == "email template trigger_exceeded: boom"


async def test_an_outcome_that_was_not_made_durable_is_not_counted() -> None:
    routing, _, dlq = router()
    dlq.refuse = True
    before = counted("dead_lettered")

    with pytest.raises(ValueError, match="too large"):
        await routing.route(DeadLetter(job(), "endpoint answered 410"))

    assert counted("dead_lettered") == before
    assert routing.activity.snapshot(0)["events"] == []
