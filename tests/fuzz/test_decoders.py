"""Every decoder of a record the worker reads, fed hostile bytes: it returns a value that keeps
the contract, or raises InvalidRecord with a short reason; never anything else. And whatever
the record, its rejection fits in a Kafka record."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.delivery.agent import decode_trigger
from pipeline.delivery.jobs import DeliveryJob
from pipeline.errors import InvalidRecord
from pipeline.portal.digests import DigestItem
from pipeline.portal.events import decode_portal_event
from pipeline.records.checks import MAX_ID_LENGTH
from pipeline.records.rejections import MAX_REASON_CHARS, rejection
from pipeline.records.requests import MAX_COUNT, decode_request
from pipeline.records.subjects import decode_org_record, decode_session_record
from pipeline.usage.partials import decode_partial
from tests.fuzz.inputs import hostile

FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

REQUEST = {"ts": 1764331200.25, "org_id": "org1", "key": "abc123", "api_id": "a1", "count": 3}
SESSION = {
    "org_id": "org1",
    "quota_max": 1000,
    "quota_renewal_rate": 3600,
    "monitor": {"trigger_limits": [80.0, 50.0]},
    "meta_data": {"developer_email": "dev@example.com"},
    "reset_quota": False,
}
ORG = {
    "quota_max": 10,
    "quota_renewal_rate": 60,
    "monitor": {"trigger_limits": [90]},
    "event_options": {"trigger_event": {"webhook": "https://h.example/q", "email": "o@x.io"}},
}
PORTAL = {"event": "key_event.created", "org_id": "org1", "data": {"key": "k"}, "id": "evt_1"}
PARTIAL = {"org_id": "org1", "buckets": [[1764331200.25, 4]], "origin": [0, 41, 0]}
TRIGGER = {
    "event": "TriggerExceeded",
    "message": "Quota trigger reached",
    "org": "org1",
    "key": "abc123",
    "trigger_limit": "80",
    "id": "evt_x",
    "usage_percentage": 80,
}
JOB = orjson.loads(
    DeliveryJob("evt_1", "POST", "https://h.example/", b"{}", {"a": "b"}, {"id": "e"}).to_bytes()
)
DIGEST = {"to": "o@x.io", "org_id": "org1", "request": {"id": "r"}, "at": 1764331200.0}

keys = st.one_of(
    st.none(),
    st.binary(max_size=50),
    st.just(b"abc123"),
    st.just(b"k" * (MAX_ID_LENGTH + 1)),
    st.just(b"\xff\xfeabc"),
)


def outcome(decode: Callable[[], Any]) -> Any:
    """The decoder's value, or None after an InvalidRecord (with a reason that is short)."""
    reason = ""
    try:
        return decode()
    except InvalidRecord as exc:
        reason = exc.reason
    assert reason
    assert len(reason) <= MAX_REASON_CHARS, reason[:300]
    return None


def assert_rejection_fits(key: bytes | None, value: bytes | None) -> None:
    record = rejection(
        topic="t", partition=0, offset=1, key=key, value=value, reason="bad", now=1.0
    )
    assert len(record) < 1_000_000


@FUZZ
@given(key=keys, value=hostile(REQUEST))
def test_gateway_requests(key: bytes | None, value: bytes | None) -> None:
    request = outcome(lambda: decode_request(key, value))
    if request is not None:
        assert key == request.key.encode()
        assert 1 <= request.count <= MAX_COUNT
        assert type(request.ts) is float
        assert abs(request.ts) < float("inf")
        assert 0 < len(request.org_id) <= MAX_ID_LENGTH
    assert_rejection_fits(key, value)


@FUZZ
@given(key=keys, value=hostile(SESSION))
def test_sessions(key: bytes | None, value: bytes | None) -> None:
    decoded = outcome(lambda: decode_session_record(key, value))
    if decoded is not None:
        subject, session = decoded
        assert 0 < len(subject) <= MAX_ID_LENGTH
        assert session is None or all(0 < t <= 100 for t in session.monitor.trigger_limits)
    assert_rejection_fits(key, value)


@FUZZ
@given(key=keys, value=hostile(ORG))
def test_orgs(key: bytes | None, value: bytes | None) -> None:
    decoded = outcome(lambda: decode_org_record(key, value))
    if decoded is not None and decoded[1] is not None:
        for target in decoded[1].event_options.values():
            assert target.webhook is None or target.webhook.startswith(("http://", "https://"))
    assert_rejection_fits(key, value)


@FUZZ
@given(value=hostile(PORTAL))
def test_portal_events(value: bytes | None) -> None:
    event = outcome(lambda: decode_portal_event(value, default_id="evt_default"))
    if event is not None:
        assert event.option in {"api_event", "key_event", "key_request_event", "developer_event"}
        assert isinstance(event.data, dict)


@pytest.mark.parametrize(
    ("template", "decode"),
    [
        pytest.param(PARTIAL, decode_partial, id="org-partials"),
        pytest.param(TRIGGER, decode_trigger, id="triggers"),
        pytest.param(JOB, DeliveryJob.from_bytes, id="retry-tiers"),
        pytest.param(DIGEST, DigestItem.from_json, id="digest"),
    ],
)
def test_internal_and_trigger_topics(template: dict[str, Any], decode: Callable[..., Any]) -> None:
    @FUZZ
    @given(value=hostile(template))
    def check(value: bytes | None) -> None:
        outcome(lambda: decode(value))

    check()


def test_the_templates_themselves_decode() -> None:
    """The strategies start from valid values: a decoder that refused them would pass the
    properties above without testing much."""
    assert decode_request(b"abc123", orjson.dumps(REQUEST)).count == 3
    assert decode_session_record(b"k", orjson.dumps(SESSION))[1] is not None
    assert decode_org_record(b"o", orjson.dumps(ORG))[1] is not None
    assert decode_portal_event(orjson.dumps(PORTAL), default_id="x").id == "evt_1"
    assert decode_partial(orjson.dumps(PARTIAL)).origin == (0, 41, 0)
    assert decode_trigger(orjson.dumps(TRIGGER))["id"] == "evt_x"
    assert DeliveryJob.from_bytes(orjson.dumps(JOB)).body == b"{}"
    assert DigestItem.from_json(orjson.dumps(DIGEST)).to == "o@x.io"
