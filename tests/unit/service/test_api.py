"""pipeline.service.api_rules: who may call, what a body becomes, how usage is shown."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from pydantic import SecretStr

from pipeline.config import MonitorConfig
from pipeline.errors import InvalidRecord
from pipeline.service.api_rules import (
    API_DISABLED,
    Record,
    authorize,
    key_quota,
    org_quota,
    org_record,
    portal_record,
    session_record,
    usage_view,
)
from pipeline.usage.quota import Limits, Period, UsageState

TOKEN = SecretStr("s3cret-token")
T0 = 1764331200.25
MONITOR = MonitorConfig(
    enable_trigger_monitors=True,
    global_trigger_limits=(50, 80),
    monitor_user_keys=True,
    monitor_org_keys=True,
)


# --- authorize ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "header", ["Bearer s3cret-token", "bearer s3cret-token", "  Bearer   s3cret-token  "]
)
def test_the_configured_bearer_token_is_let_in(header):
    assert authorize(header, TOKEN) is None


@pytest.mark.parametrize(
    ("header", "error"),
    [
        (None, "missing bearer token"),
        ("", "missing bearer token"),
        ("Bearer", "missing bearer token"),
        ("Bearer ", "missing bearer token"),
        ("Basic czNjcmV0LXRva2Vu", "missing bearer token"),
        ("s3cret-token", "missing bearer token"),
        ("Bearer s3cret-token2", "invalid bearer token"),
        ("Bearer S3CRET-TOKEN", "invalid bearer token"),
        ("Bearer sécret", "invalid bearer token"),
    ],
)
def test_a_missing_or_wrong_token_is_401_with_a_bearer_challenge(header, error):
    refusal = authorize(header, TOKEN)
    assert refusal is not None
    assert refusal.status == 401
    assert refusal.error == error
    assert refusal.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize("token", [None, SecretStr("")])
@pytest.mark.parametrize("header", [None, "Bearer ", "Bearer anything"])
def test_without_a_configured_token_the_api_is_disabled(token, header):
    refusal = authorize(header, token)
    assert refusal is not None
    assert (refusal.status, refusal.error) == (403, API_DISABLED)


# --- request bodies to records ----------------------------------------------------------------


def portal_body(**fields: Any) -> bytes:
    event = {"event": "key_request_event.submitted", "org_id": "org1", "data": {"a": [1, 2]}}
    return orjson.dumps({**event, **fields})


def test_a_portal_event_gets_the_default_id_and_is_keyed_by_its_org():
    event_id, record = portal_record(portal_body(extra={"kept": True}), default_id="evt_new")
    assert event_id == "evt_new"
    assert record.key == b"org1"
    assert orjson.loads(record.value) == {
        "event": "key_request_event.submitted",
        "org_id": "org1",
        "data": {"a": [1, 2]},
        "extra": {"kept": True},
        "id": "evt_new",
    }


def test_a_portal_event_keeps_its_own_id_so_a_client_can_retry_safely():
    event_id, record = portal_record(portal_body(id="evt_client_1"), default_id="evt_new")
    assert event_id == "evt_client_1"
    assert orjson.loads(record.value)["id"] == "evt_client_1"


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"", "not JSON"),
        (b"[1]", "not an object"),
        (portal_body(event="key_event.exploded"), "unknown event"),
        (portal_body(org_id=""), "org_id"),
        (portal_body(data="x"), "data"),
        (portal_body(id=7), "id"),
    ],
)
def test_an_invalid_portal_event_says_why(body, reason):
    with pytest.raises(InvalidRecord, match=reason):
        portal_record(body, default_id="evt_new")


def test_a_session_is_published_as_received_once_valid():
    body = b'{"org_id": "org1", "quota_max": 10, "unknown": {"kept": "as is"}}'
    assert session_record("key-1", body) == Record(b"key-1", body)


def test_a_session_delete_is_a_tombstone():
    assert session_record("key-1", None) == Record(b"key-1", None)
    assert org_record("org1", None) == Record(b"org1", None)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{", "not JSON"),
        (b'{"quota_max": "10"}', "quota_max"),
        (b'{"monitor": {"trigger_limits": [120]}}', "outside"),
    ],
)
def test_an_invalid_session_says_why(body, reason):
    with pytest.raises(InvalidRecord, match=reason):
        session_record("key-1", body)


def test_an_org_is_validated_as_an_org():
    body = b'{"quota_max": 5, "event_options": {"key_event": {"webhook": "http://x"}}}'
    assert org_record("org1", body) == Record(b"org1", body)
    with pytest.raises(InvalidRecord, match="event_options"):
        org_record("org1", b'{"event_options": {"key_event": 3}}')


# --- usage views --------------------------------------------------------------------------------


def stored(period: Period | None, previous: Period | None = None) -> dict[str, Any]:
    return UsageState(period, previous).to_json()


LIMITS = Limits(quota_max=10, renewal_rate=3600, thresholds=frozenset({80.0, 50.0, 82.5}))


def test_the_current_period_its_usage_and_fired_thresholds():
    period = Period(start=T0, end=T0 + 3600, usage=8, fired=frozenset({80.0, 50.0}))
    assert usage_view(stored(period), LIMITS, now=T0 + 10) == {
        "period_start": T0,
        "period_end": T0 + 3600,
        "usage": 8,
        "quota_max": 10,
        "usage_percentage": 80,
        "fired": ["50", "80"],
        "thresholds": ["50", "80", "82.5"],
    }


def test_no_usage_yet_is_zero_without_a_period():
    view = usage_view(None, LIMITS, now=T0)
    assert view["usage"] == 0
    assert view["usage_percentage"] == 0
    assert (view["period_start"], view["period_end"], view["fired"]) == (None, None, [])


def test_a_period_that_has_ended_no_longer_counts():
    period = Period(start=T0, end=T0 + 3600, usage=8, fired=frozenset({50.0}))
    view = usage_view(stored(period), LIMITS, now=T0 + 3600)
    assert (view["usage"], view["period_start"], view["fired"]) == (0, None, [])
    assert usage_view(stored(period), LIMITS, now=T0 + 3599.9)["usage"] == 8


def test_a_quota_that_never_renews_has_no_period_end():
    never = Limits(quota_max=4, renewal_rate=0)
    period = Period(start=T0, end=float("inf"), usage=1)
    view = usage_view(stored(period), never, now=T0 + 10**9)
    assert (view["period_start"], view["period_end"], view["usage"]) == (T0, None, 1)
    assert view["usage_percentage"] == 25
    assert view["thresholds"] == []


def test_an_unlimited_quota_has_no_percentage():
    view = usage_view(None, Limits(quota_max=-1, renewal_rate=60), now=T0)
    assert (view["quota_max"], view["usage_percentage"]) == (-1, None)


def test_fractional_quota_and_percentage_stay_fractional():
    view = usage_view(stored(Period(T0, T0 + 60, usage=1)), Limits(2.5, 60), now=T0)
    assert (view["quota_max"], view["usage_percentage"]) == (2.5, 40)


def test_a_keys_quota_applies_its_own_limits_or_the_global_ones():
    session = {
        "org_id": "org1",
        "quota_max": 10,
        "quota_renewal_rate": 3600,
        "trigger_limits": [],
        "developer_email": None,
    }
    period = Period(T0, T0 + 3600, usage=5, fired=frozenset({50.0}))
    view = key_quota("key-1", session, stored(period), monitor=MONITOR, now=T0)
    assert view["key"] == "key-1"
    assert view["org_id"] == "org1"
    assert view["thresholds"] == ["50", "80"]
    assert (view["usage"], view["fired"]) == (5, ["50"])
    own = key_quota("key-1", {**session, "trigger_limits": [90]}, None, monitor=MONITOR, now=T0)
    assert own["thresholds"] == ["90"]


def test_an_orgs_quota():
    org = {"quota_max": 100, "quota_renewal_rate": 0, "trigger_limits": [], "event_options": {}}
    period = Period(T0, float("inf"), usage=60, fired=frozenset({50.0}))
    view = org_quota("org1", org, stored(period), monitor=MONITOR, now=T0)
    assert view == {
        "org": "org1",
        "period_start": T0,
        "period_end": None,
        "usage": 60,
        "quota_max": 100,
        "usage_percentage": 60,
        "fired": ["50"],
        "thresholds": ["50", "80"],
    }
    unwatched = MonitorConfig(enable_trigger_monitors=True, global_trigger_limits=(50,))
    assert org_quota("org1", org, None, monitor=unwatched, now=T0)["thresholds"] == []
