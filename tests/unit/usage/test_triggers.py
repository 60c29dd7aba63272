"""pipeline.usage.triggers: the TriggerEvent payload and its deterministic id."""

from __future__ import annotations

import json
import math
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from pipeline.usage.quota import Crossing
from pipeline.usage.triggers import format_limit, trigger_event, trigger_id

SCHEMAS_DIR = Path(__file__).parents[3] / "schemas"

RAW_KEY = "b5f9a7c2e1d84f3a9c6e0b7d2a4f8e1c"


@cache
def trigger_schema() -> Draft202012Validator:
    schema = json.loads((SCHEMAS_DIR / "trigger_event.json").read_text(encoding="utf-8"))
    return Draft202012Validator(schema)


def schema_errors(event: dict[str, Any]) -> list[str]:
    return [error.message for error in trigger_schema().iter_errors(event)]


def crossing(
    *,
    threshold: float = 80.0,
    usage: int = 800,
    period_start: float = 1764331200.25,
    period_end: float = 1764334800.25,
    ts: float = 1764331999.0,
) -> Crossing:
    return Crossing(threshold, usage, period_start, period_end, ts)


def key_event(**fields: Any) -> dict[str, Any]:
    quota_max = fields.pop("quota_max", 1000)
    return trigger_event(
        "key", org_id="org1", key=RAW_KEY, quota_max=quota_max, crossing=crossing(**fields)
    )


def org_event(**fields: Any) -> dict[str, Any]:
    quota_max = fields.pop("quota_max", 1000)
    return trigger_event(
        "org", org_id="org1", key="", quota_max=quota_max, crossing=crossing(**fields)
    )


# --- format_limit ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("threshold", "expected"),
    [
        (80, "80"),
        (80.0, "80"),
        (82.5, "82.5"),
        (100.0, "100"),
        (100, "100"),
        (0.5, "0.5"),
        (1, "1"),
        (33.25, "33.25"),
    ],
)
def test_format_limit(threshold: float, expected: str) -> None:
    assert format_limit(threshold) == expected


def test_format_limit_small_fraction_is_a_decimal() -> None:
    assert format_limit(0.00001) == "0.00001"


# --- trigger_id --------------------------------------------------------------------------------

BASE_ID_ARGS: dict[str, Any] = {
    "subject_type": "key",
    "subject": RAW_KEY,
    "period_start": 1764331200.25,
    "threshold": 80.0,
}


def an_id(**changes: Any) -> str:
    return trigger_id(**{**BASE_ID_ARGS, **changes})


def test_trigger_id_is_deterministic() -> None:
    assert an_id() == an_id()
    assert an_id().startswith("evt_")


def test_integral_threshold_as_int_or_float_is_the_same_id() -> None:
    assert an_id(threshold=80) == an_id(threshold=80.0)


@pytest.mark.parametrize(
    "change",
    [
        pytest.param({"subject_type": "org"}, id="subject-type"),
        pytest.param({"subject": RAW_KEY[:-1] + "d"}, id="subject"),
        pytest.param({"period_start": 1764334800.25}, id="period-start"),
        pytest.param({"period_start": 1764331200.5}, id="period-start-fraction"),
        pytest.param({"threshold": 60.0}, id="threshold"),
        pytest.param({"threshold": 80.5}, id="fractional-threshold"),
    ],
)
def test_trigger_id_differs_when_any_input_differs(change: dict[str, Any]) -> None:
    assert an_id(**change) != an_id()


def test_trigger_id_differs_for_close_thresholds() -> None:
    assert an_id(threshold=33.333333) != an_id(threshold=33.333334)


def test_trigger_id_never_contains_the_raw_key() -> None:
    event_id = an_id()

    assert RAW_KEY not in event_id
    assert RAW_KEY[:8] not in event_id
    assert RAW_KEY[-8:] not in event_id


# --- trigger_event -----------------------------------------------------------------------------


def test_key_trigger_matches_the_contract() -> None:
    event = key_event()

    assert event == {
        "event": "TriggerExceeded",
        "message": "Quota trigger reached",
        "org": "org1",
        "key": RAW_KEY,
        "trigger_limit": "80",
        "id": trigger_id("key", RAW_KEY, 1764331200.25, 80.0),
        "subject": "key",
        "usage": 800,
        "quota_max": 1000,
        "usage_percentage": 80,
        "period_start": 1764331200.25,
        "period_end": 1764334800.25,
        "ts": 1764331999.0,
    }
    assert list(event)[:5] == ["event", "message", "org", "key", "trigger_limit"]


def test_org_trigger_has_empty_key_and_the_org_id_as_subject() -> None:
    event = org_event(threshold=82.5, usage=825)

    assert event["key"] == ""
    assert event["subject"] == "org"
    assert event["org"] == "org1"
    assert event["trigger_limit"] == "82.5"
    assert event["usage_percentage"] == 82.5
    assert event["id"] == trigger_id("org", "org1", 1764331200.25, 82.5)
    assert event["id"] != key_event(threshold=82.5, usage=825)["id"]


def test_org_trigger_ignores_a_key_passed_in() -> None:
    event = trigger_event("org", org_id="org1", key=RAW_KEY, quota_max=1000, crossing=crossing())

    assert event["key"] == ""
    assert RAW_KEY not in json.dumps(event)


def test_never_renewing_quota_has_no_period_end() -> None:
    event = key_event(period_end=math.inf)

    assert event["period_end"] is None
    json.dumps(event, allow_nan=False)


@pytest.mark.parametrize(
    ("usage", "quota_max", "expected"),
    [
        (800, 1000, 80),
        (1, 3, 33.33),
        (2000, 1000, 200),
        (825, 1000, 82.5),
    ],
)
def test_usage_percentage(usage: int, quota_max: float, expected: float) -> None:
    assert key_event(usage=usage, quota_max=quota_max)["usage_percentage"] == expected


@pytest.mark.parametrize(
    ("quota_max", "expected"), [(1000, 1000), (1000.0, 1000), (1500.5, 1500.5)]
)
def test_quota_max_is_an_int_when_integral(quota_max: float, expected: float) -> None:
    value = key_event(quota_max=quota_max)["quota_max"]

    assert value == expected
    assert type(value) is type(expected)


@pytest.mark.parametrize(
    "event",
    [
        pytest.param(key_event(), id="key"),
        pytest.param(org_event(), id="org"),
        pytest.param(key_event(period_end=math.inf), id="key-never-renews"),
        pytest.param(org_event(period_end=math.inf, threshold=82.5, usage=825), id="org-fraction"),
        pytest.param(key_event(threshold=100, usage=1000), id="limit-100"),
        pytest.param(key_event(threshold=0.5, usage=5), id="limit-0.5"),
        pytest.param(key_event(threshold=80, usage=1500), id="jumped-over"),
        pytest.param(key_event(quota_max=1500.5, usage=1201), id="fractional-quota"),
    ],
)
def test_every_event_validates_against_the_schema(event: dict[str, Any]) -> None:
    assert schema_errors(event) == []


def test_schema_check_can_fail() -> None:
    assert schema_errors({**key_event(), "trigger_limit": "80.0"}) != []
