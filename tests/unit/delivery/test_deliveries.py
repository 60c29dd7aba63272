"""Delivery jobs: their retry-tier form and their attempts."""

from __future__ import annotations

import dataclasses

import orjson
import pytest

from pipeline.delivery.jobs import DeliveryJob
from pipeline.errors import InvalidRecord, RetriableDeliveryError


def make_job(**changes: object) -> DeliveryJob:
    job = DeliveryJob(
        event_id="evt_1",
        method="POST",
        url="https://hooks.example/quota",
        body=b'{"event":"TriggerExceeded"}\x00\xff',
        headers={"X-Team": "billing"},
        event={"id": "evt_1", "event": "TriggerExceeded", "nested": {"usage": [1, 2]}},
    )
    return dataclasses.replace(job, **changes)


def test_a_job_survives_the_retry_tier_round_trip() -> None:
    job = make_job().attempted(10.0, RetriableDeliveryError("timed out"), None)
    job = dataclasses.replace(job, due=70.0)

    assert DeliveryJob.from_bytes(job.to_bytes()) == job


def test_every_field_travels_through_the_retry_tier() -> None:
    fields = {field.name for field in dataclasses.fields(DeliveryJob)}

    assert set(orjson.loads(make_job(channel="email").to_bytes())) == fields


def test_attempts_count_up_and_keep_the_first_time() -> None:
    first = make_job().attempted(10.0, RetriableDeliveryError("boom", status=503), None)
    second = first.attempted(20.0, None, 204)

    assert (first.attempts, first.first_attempt_at, first.last_status) == (1, 10.0, 503)
    assert first.last_error == "boom"
    assert (second.attempts, second.first_attempt_at, second.last_attempt_at) == (2, 10.0, 20.0)
    assert (second.last_status, second.last_error) == (204, "")
    assert (
        dataclasses.replace(
            second, attempts=0, first_attempt_at=None, last_attempt_at=None, last_status=None
        )
        == make_job()
    )


def test_a_record_that_is_not_a_job_is_invalid() -> None:
    with pytest.raises(InvalidRecord, match="not a delivery job"):
        DeliveryJob.from_bytes(b'{"event_id": "evt_1"}')
