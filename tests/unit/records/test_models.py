"""pipeline.records: decoding the contract's payloads, and readable reasons for bad records."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.errors import InvalidRecord
from pipeline.records import requests
from pipeline.records.requests import MAX_COUNT, RequestCount, decode_request_count
from pipeline.records.subjects import decode_org, decode_session

_MISSING = object()


def encode(value: Any) -> bytes:
    return json.dumps(value).encode()


def request_count(
    *,
    ts: Any = 1764331200.25,
    org_id: Any = "org1",
    key: Any = "abc123",
    api_id: Any = "api1",
    count: Any = 1,
    **extra: Any,
) -> dict[str, Any]:
    """A RequestCount payload; pass _MISSING to leave a field out."""
    fields = {"ts": ts, "org_id": org_id, "key": key, "api_id": api_id, "count": count, **extra}
    return {name: value for name, value in fields.items() if value is not _MISSING}


def reason_of(raw: bytes | None) -> str:
    with pytest.raises(InvalidRecord) as caught:
        decode_request_count(raw)
    assert caught.value.reason == str(caught.value)
    return caught.value.reason


# --- RequestCount: accepted --------------------------------------------------------------------


def test_contract_example_decodes() -> None:
    raw = b'{"ts": 1764331200.25, "org_id": "org1", "key": "abc123", "api_id": "api1", "count": 1}'

    assert decode_request_count(raw) == RequestCount(
        ts=1764331200.25, org_id="org1", key="abc123", count=1, api_id="api1"
    )


@pytest.mark.parametrize(
    ("payload", "field", "expected"),
    [
        pytest.param(request_count(ts=1764331200), "ts", 1764331200.0, id="int-ts"),
        pytest.param(request_count(ts=1764331200.75), "ts", 1764331200.75, id="float-ts"),
        pytest.param(request_count(count=_MISSING), "count", 1, id="default-count"),
        pytest.param(request_count(count=250), "count", 250, id="pre-aggregated"),
        pytest.param(request_count(count=MAX_COUNT), "count", 1_000_000_000, id="max-count"),
        pytest.param(request_count(api_id=_MISSING), "api_id", None, id="no-api-id"),
        pytest.param(request_count(api_id=None), "api_id", None, id="null-api-id"),
        pytest.param(
            request_count(path="/orders", status=200, latency={"total": 3}),
            "key",
            "abc123",
            id="unknown-fields-ignored",
        ),
    ],
)
def test_accepted_request_counts(payload: dict[str, Any], field: str, expected: Any) -> None:
    decoded = decode_request_count(encode(payload))

    assert getattr(decoded, field) == expected


def test_ts_is_always_a_float() -> None:
    assert type(decode_request_count(encode(request_count(ts=1764331200))).ts) is float


# --- RequestCount: rejected --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param(None, "no value", id="null-value"),
        pytest.param(b"", "not JSON", id="empty-bytes"),
        pytest.param(b"not json", "not JSON", id="not-json"),
        pytest.param(b'{"ts": 1,', "not JSON", id="truncated"),
        pytest.param(b"\xff\xfe", "not JSON", id="not-utf8"),
        pytest.param(encode([request_count()]), "JSON list, not an object", id="json-array"),
        pytest.param(b"42", "not an object", id="json-number"),
        pytest.param(b"null", "not an object", id="json-null"),
        pytest.param(b'{"ts": NaN, "org_id": "o", "key": "k"}', "not JSON", id="nan-literal"),
        pytest.param(b'{"ts": 1e400, "org_id": "o", "key": "k"}', "not JSON", id="infinite-ts"),
    ],
)
def test_unparseable_values(raw: bytes | None, expected: str) -> None:
    assert expected in reason_of(raw)


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        pytest.param(request_count(ts=_MISSING), "ts", id="missing-ts"),
        pytest.param(request_count(ts=None), "ts", id="null-ts"),
        pytest.param(request_count(ts="1764331200"), "ts", id="string-ts"),
        pytest.param(request_count(ts="NaN"), "ts", id="nan-string-ts"),
        pytest.param(request_count(ts=True), "ts", id="boolean-ts"),
        pytest.param(request_count(ts=[1764331200]), "ts", id="list-ts"),
        pytest.param(request_count(org_id=_MISSING), "org_id", id="missing-org-id"),
        pytest.param(request_count(org_id=""), "org_id", id="empty-org-id"),
        pytest.param(request_count(org_id=7), "org_id", id="numeric-org-id"),
        pytest.param(request_count(key=_MISSING), "key", id="missing-key"),
        pytest.param(request_count(key=""), "key", id="empty-key"),
        pytest.param(request_count(key=None), "key", id="null-key"),
        pytest.param(request_count(count=0), "count", id="count-0"),
        pytest.param(request_count(count=-1), "count", id="negative-count"),
        pytest.param(request_count(count=1_000_000_001), "count", id="count-above-max"),
        pytest.param(request_count(count=1.5), "count", id="fractional-count"),
        pytest.param(request_count(count=2.0), "count", id="float-count"),
        pytest.param(request_count(count="3"), "count", id="string-count"),
        pytest.param(request_count(count=True), "count", id="boolean-count"),
        pytest.param(request_count(count=None), "count", id="null-count"),
        pytest.param(request_count(api_id=7), "api_id", id="numeric-api-id"),
    ],
)
def test_rejected_request_counts_name_the_field(payload: dict[str, Any], field: str) -> None:
    reason = reason_of(encode(payload))

    assert reason.startswith(f"{field} must be")


def test_count_range_reason_says_the_range() -> None:
    assert reason_of(encode(request_count(count=0))) == "count must be between 1 and 1000000000"


# --- RequestCount: msgspec's decoder against the checks in Python ------------------------------

#: Any JSON value a field might hold: the right type, the wrong one, edge values of each.
#: Integers past 64 bits too: orjson reads them as doubles. Text from a few characters that
#: JSON escapes or encodes in several bytes (hypothesis's full Unicode tables take over a
#: second to build on a fresh checkout, and its health check failed CI).
integers = st.integers(min_value=-(2**70), max_value=2**70)
texts = st.text(alphabet='ao"\\\x00\u00e9\u2028\U0001f600', max_size=8)
json_values = st.one_of(
    st.none(),
    st.booleans(),
    integers,
    st.sampled_from([0, 1, MAX_COUNT, MAX_COUNT + 1, -1]),
    st.floats(allow_nan=False, allow_infinity=False),
    texts,
    st.sampled_from(["", "org1", "key"]),
    st.lists(integers, max_size=2),
    st.dictionaries(texts, integers, max_size=2),
)
fields = st.sampled_from(["ts", "org_id", "key", "count", "api_id", "extra"])
#: Mostly a valid payload with a field or two changed, so that each check is reached alone.
payloads = st.dictionaries(fields, json_values, max_size=2).map(
    lambda changed: {**request_count(), **changed}
) | st.dictionaries(fields, json_values)


def checked(raw: bytes | None) -> RequestCount | str:
    """What the checks in Python make of a value: the record, or the reason it is refused."""
    try:
        return requests._checked_request_count(raw)
    except InvalidRecord as exc:
        return exc.reason


@settings(max_examples=500)
@given(payloads)
def test_the_fast_decoder_agrees_with_the_checks(payload: dict[str, Any]) -> None:
    raw = encode(payload)
    expected = checked(raw)

    if isinstance(expected, str):
        assert reason_of(raw) == expected
    else:
        decoded = decode_request_count(raw)
        assert decoded == expected
        assert type(decoded.ts) is float


@settings(max_examples=300)
@given(st.binary(max_size=64) | st.sampled_from([b"{}", b'{"ts": 1e400}', b'{"ts": -0.0}']))
def test_any_bytes_are_a_record_or_a_reason(raw: bytes) -> None:
    expected = checked(raw)

    if isinstance(expected, str):
        assert reason_of(raw) == expected
    else:
        assert decode_request_count(raw) == expected


def test_a_valid_value_takes_the_fast_decoder(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(raw: bytes | None) -> RequestCount:
        raise AssertionError("the checks in Python were called for a valid value")

    monkeypatch.setattr(requests, "_checked_request_count", refuse)

    assert decode_request_count(encode(request_count(count=3))).count == 3


# --- Session -----------------------------------------------------------------------------------


def tyk_session(**overrides: Any) -> dict[str, Any]:
    """A session object as Tyk's gateway stores it (GET /tyk/keys/{key})."""
    session: dict[str, Any] = {
        "last_check": 0,
        "allowance": 1000,
        "rate": 1000,
        "per": 60,
        "throttle_interval": -1,
        "throttle_retry_limit": -1,
        "max_query_depth": -1,
        "date_created": "2025-11-28T12:00:00.000000000Z",
        "expires": 1796000000,
        "quota_max": 10000,
        "quota_renews": 1764334800,
        "quota_remaining": 9200,
        "quota_renewal_rate": 3600,
        "access_rights": {
            "api1": {
                "api_name": "Orders API",
                "api_id": "api1",
                "versions": ["Default"],
                "allowed_urls": [{"url": "/orders", "methods": ["GET", "POST"]}],
                "limit": {"rate": 1000, "per": 60, "quota_max": 10000, "quota_renewal_rate": 3600},
            }
        },
        "org_id": "org1",
        "oauth_client_id": "",
        "oauth_keys": None,
        "basic_auth_data": {"password": "", "hash_type": ""},
        "jwt_data": {"secret": ""},
        "hmac_enabled": False,
        "hmac_string": "",
        "is_inactive": False,
        "apply_policies": ["pol1"],
        "data_expires": 0,
        "monitor": {"trigger_limits": [80, 60, 50]},
        "enable_detailed_recording": False,
        "meta_data": {"developer_email": "dev@example.com", "tyk_developer_id": "dev1"},
        "tags": ["partner"],
        "alias": "dev@example.com",
        "last_updated": "1764331200",
        "session_lifetime": 0,
        "smoothing": None,
    }
    session.update(overrides)
    return copy.deepcopy(session)


def session_reason(payload: Any) -> str:
    with pytest.raises(InvalidRecord) as caught:
        decode_session(encode(payload))
    return caught.value.reason


def test_full_tyk_session_loads() -> None:
    session = decode_session(encode(tyk_session()))

    assert session is not None
    assert session.org_id == "org1"
    assert session.quota_max == 10000
    assert session.quota_renewal_rate == 3600
    assert set(session.monitor.trigger_limits) == {80, 60, 50}
    assert session.developer_email == "dev@example.com"
    assert session.reset_quota is False
    assert not session.unlimited
    assert session.renews


def test_contract_session_example_loads() -> None:
    raw = (
        b'{"org_id": "org1", "quota_max": 1000, "quota_renewal_rate": 3600,'
        b' "monitor": {"trigger_limits": [80.0, 60.0, 50.0]},'
        b' "meta_data": {"developer_email": "dev@example.com"}}'
    )

    session = decode_session(raw)

    assert session is not None
    assert session.monitor.trigger_limits == (80.0, 60.0, 50.0)
    assert session.developer_email == "dev@example.com"


@pytest.mark.parametrize(
    "overrides",
    [
        pytest.param({"monitor": None}, id="null-monitor"),
        pytest.param({"monitor": {"trigger_limits": None}}, id="null-trigger-limits"),
        pytest.param({"monitor": {}}, id="empty-monitor"),
        pytest.param({"meta_data": None}, id="null-meta-data"),
        pytest.param({"monitor": None, "meta_data": None}, id="both-null"),
    ],
)
def test_go_nulls_are_empty(overrides: dict[str, Any]) -> None:
    session = decode_session(encode(tyk_session(**overrides)))

    assert session is not None
    assert session.quota_max == 10000
    if "monitor" in overrides:
        assert session.monitor.trigger_limits == ()
    if "meta_data" in overrides:
        assert session.meta_data == {}
        assert session.developer_email is None


@pytest.mark.parametrize(
    ("meta_data", "expected"),
    [
        ({"developer_email": "dev@example.com"}, "dev@example.com"),
        ({"developer_email": ""}, None),
        ({"developer_email": 7}, None),
        ({"tyk_developer_id": "dev1"}, None),
    ],
)
def test_developer_email(meta_data: dict[str, Any], expected: str | None) -> None:
    session = decode_session(encode(tyk_session(meta_data=meta_data)))

    assert session is not None
    assert session.developer_email == expected


def test_tombstone_is_none() -> None:
    assert decode_session(None) is None


@pytest.mark.parametrize(
    ("quota_max", "renewal_rate", "unlimited", "renews"),
    [(1000, 3600, False, True), (0, 3600, True, True), (-1, -1, True, False), (5, 0, False, False)],
)
def test_unlimited_and_renews(
    quota_max: float, renewal_rate: float, unlimited: bool, renews: bool
) -> None:
    payload = tyk_session(quota_max=quota_max, quota_renewal_rate=renewal_rate)
    session = decode_session(encode(payload))

    assert session is not None
    assert (session.unlimited, session.renews) == (unlimited, renews)


def test_edge_trigger_limits_are_accepted() -> None:
    session = decode_session(encode(tyk_session(monitor={"trigger_limits": [100, 0.5]})))

    assert session is not None
    assert set(session.monitor.trigger_limits) == {100, 0.5}


@pytest.mark.parametrize(
    ("limits", "shown"),
    [
        pytest.param([80, 0], "0", id="zero"),
        pytest.param([150], "150", id="above-100"),
        pytest.param([100.5], "100.5", id="just-above-100"),
        pytest.param([-5], "-5", id="negative"),
    ],
)
def test_trigger_limit_outside_range_names_the_field(limits: list[float], shown: str) -> None:
    reason = session_reason(tyk_session(monitor={"trigger_limits": limits}))

    assert "monitor.trigger_limits" in reason
    assert f"trigger limit {shown} is outside (0, 100]" in reason


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        pytest.param(b"not json", "not JSON", id="not-json"),
        pytest.param(b"[]", "not an object", id="array"),
        pytest.param(encode(tyk_session(quota_max="lots")), "quota_max", id="bad-quota-max"),
        pytest.param(encode(tyk_session(reset_quota="please")), "reset_quota", id="bad-reset"),
        pytest.param(encode(tyk_session(meta_data=[])), "meta_data", id="meta-data-list"),
    ],
)
def test_bad_sessions(payload: bytes, expected: str) -> None:
    with pytest.raises(InvalidRecord) as caught:
        decode_session(payload)

    assert expected in caught.value.reason


def test_reset_quota_is_read() -> None:
    session = decode_session(encode(tyk_session(reset_quota=True)))

    assert session is not None
    assert session.reset_quota is True


# --- Org ---------------------------------------------------------------------------------------


def org(**overrides: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "org_id": "ignored",
        "quota_max": 100000,
        "quota_renewal_rate": 86400,
        "monitor": {"trigger_limits": [90, 75]},
        "event_options": {
            "api_event": {"webhook": "https://hooks.example.com/api", "email": "ops@example.com"},
            "key_event": {"webhook": "", "email": "", "redirect": ""},
            "key_request_event": {"email": "portal-admin@example.com"},
            "trigger_event": {
                "webhook": "https://hooks.example.com/quota",
                "email": "ops@example.com",
            },
        },
    }
    payload.update(overrides)
    return payload


def test_org_reads_event_options() -> None:
    decoded = decode_org(encode(org()))

    assert decoded is not None
    assert decoded.quota_max == 100000
    assert set(decoded.monitor.trigger_limits) == {90, 75}
    trigger = decoded.event_options["trigger_event"]
    assert trigger.webhook == "https://hooks.example.com/quota"
    assert trigger.email == "ops@example.com"
    assert decoded.event_options["key_request_event"].webhook is None
    assert decoded.event_options["key_request_event"].email == "portal-admin@example.com"
    assert set(decoded.event_options) == {
        "api_event",
        "key_event",
        "key_request_event",
        "trigger_event",
    }


@pytest.mark.parametrize("event_options", [None, {}])
def test_org_without_event_options(event_options: Any) -> None:
    decoded = decode_org(encode(org(event_options=event_options)))

    assert decoded is not None
    assert decoded.event_options == {}


def test_org_tombstone_is_none() -> None:
    assert decode_org(None) is None


def test_org_bad_trigger_limit_names_the_field() -> None:
    with pytest.raises(InvalidRecord, match=r"monitor\.trigger_limits"):
        decode_org(encode(org(monitor={"trigger_limits": [101]})))
