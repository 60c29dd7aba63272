"""The JSON Schemas in schemas/ describe the contract (docs/contract.md) exactly."""

from __future__ import annotations

import copy
import json
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

SCHEMAS_DIR = Path(__file__).parents[3] / "schemas"

SCHEMA_FILES = [
    "request_count.json",
    "session.json",
    "org.json",
    "trigger_event.json",
    "portal_event.json",
    "rejected.json",
    "dead_letter.json",
]


@cache
def load_schema(name: str) -> dict[str, Any]:
    with (SCHEMAS_DIR / name).open(encoding="utf-8") as f:
        schema: dict[str, Any] = json.load(f)
    return schema


def validator(name: str) -> Draft202012Validator:
    return Draft202012Validator(
        load_schema(name), format_checker=Draft202012Validator.FORMAT_CHECKER
    )


def errors(name: str, payload: Any) -> list[str]:
    return [e.message for e in validator(name).iter_errors(payload)]


# --- examples from docs/contract.md, "Topics and payloads" ------------------------------------

REQUEST_COUNT = {
    "ts": 1764331200.25,
    "org_id": "org1",
    "key": "abc123",
    "api_id": "api1",
    "count": 1,
}

SESSION = {
    "org_id": "org1",
    "quota_max": 1000,
    "quota_renewal_rate": 3600,
    "monitor": {"trigger_limits": [80.0, 60.0, 50.0]},
    "meta_data": {"developer_email": "dev@example.com"},
}

TRIGGER_EVENT = {
    "event": "TriggerExceeded",
    "message": "Quota trigger reached",
    "org": "org1",
    "key": "abc123",
    "trigger_limit": "80",
    "id": "…",
    "subject": "key",
    "usage": 800,
    "quota_max": 1000,
    "usage_percentage": 80,
    "period_start": 1764331200.25,
    "period_end": 1764334800.25,
    "ts": 1764331999.0,
}

ORG_TRIGGER_EVENT = {
    **TRIGGER_EVENT,
    "key": "",
    "subject": "org",
    "trigger_limit": "82.5",
    "id": "org:org1:1764331200.25:82.5",
    "usage": 825,
    "usage_percentage": 82.5,
    "period_end": None,
}

PORTAL_EVENT = {
    "event": "key_request_event.submitted",
    "org_id": "org1",
    "data": {
        "id": "req1",
        "portal_developer": {"email": "dev@example.com"},
        "for_plan": "plan1",
    },
}

ORG = {
    "org_id": "ignored",
    "quota_max": 100000,
    "quota_renewal_rate": 86400,
    "monitor": {"trigger_limits": [90, 75]},
    "event_options": {
        "api_event": {"webhook": "https://hooks.example.com/api", "email": "ops@example.com"},
        "key_event": {"webhook": "", "email": "", "redirect": ""},
        "key_request_event": {"email": "portal-admin@example.com"},
        "developer_event": {"webhook": "http://127.0.0.1:8080/dev"},
        "trigger_event": {"webhook": "https://hooks.example.com/quota", "email": "ops@example.com"},
    },
}

REJECTED = {
    "value_b64": "bm90IGpzb24=",
    "value_length": 8,
    "value_sha256": "2dfbbd5e8e5a4b7c5b07f3a8e6b5a90ae8d6f5f1a2c1a3d4e7a3b5e1c0d9f8e7",
    "value_truncated": False,
    "key_b64": "YWJjMTIz",
    "key_length": 6,
    "key_sha256": "6ca13d52ca70c883e0f0bb101e425a89e8624de51db2d2392593af6a84118090",
    "key_truncated": False,
    "topic": "gateway.requests",
    "partition": 3,
    "offset": 12345,
    "reason": "value is not JSON",
    "ts": 1764331201.5,
}

DEAD_LETTER = {
    "id": "key:abc123:1764331200.25:80",
    "channel": "webhook",
    "target": "https://hooks.example.com/quota",
    "event": TRIGGER_EVENT,
    "attempts": 8,
    "last_status": 503,
    "last_error": "HTTP 503 Service Unavailable",
    "first_attempt_at": 1764332000.0,
    "last_attempt_at": 1764440000.0,
}

# A session object as Tyk's gateway stores and returns it (GET /tyk/keys/{key}).
TYK_SESSION = {
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
            "restricted_types": [],
            "allowed_types": [],
            "limit": {
                "rate": 1000,
                "per": 60,
                "throttle_interval": -1,
                "throttle_retry_limit": -1,
                "max_query_depth": -1,
                "quota_max": 10000,
                "quota_renews": 1764334800,
                "quota_remaining": 9200,
                "quota_renewal_rate": 3600,
            },
            "field_access_rights": [],
            "disable_introspection": False,
            "allowance_scope": "",
        }
    },
    "org_id": "org1",
    "oauth_client_id": "",
    "oauth_keys": None,
    "certificate": "",
    "basic_auth_data": {"password": "", "hash_type": ""},
    "jwt_data": {"secret": ""},
    "hmac_enabled": False,
    "enable_http_signature_validation": False,
    "hmac_string": "",
    "rsa_certificate_id": "",
    "is_inactive": False,
    "apply_policy_id": "",
    "apply_policies": ["pol1"],
    "data_expires": 0,
    "monitor": {"trigger_limits": [80, 60, 50]},
    "enable_detailed_recording": False,
    "meta_data": {"developer_email": "dev@example.com", "tyk_developer_id": "dev1"},
    "tags": ["partner"],
    "alias": "dev@example.com",
    "last_updated": "1764331200",
    "id_extractor_deadline": 0,
    "session_lifetime": 0,
    "smoothing": None,
}


# --- the schemas themselves --------------------------------------------------------------------


@pytest.mark.parametrize("name", SCHEMA_FILES)
def test_schema_is_valid_draft_2020_12(name: str) -> None:
    schema = load_schema(name)
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"] == f"https://quota-pipeline.dev/schemas/{name}"
    assert schema["title"]
    assert schema["description"]


def _properties(node: Any) -> list[tuple[str, Any]]:
    """Every (name, subschema) under a "properties" keyword, at any depth."""
    found: list[tuple[str, Any]] = []
    if isinstance(node, dict):
        for keyword, value in node.items():
            if keyword == "properties" and isinstance(value, dict):
                found.extend(value.items())
            found.extend(_properties(value))
    elif isinstance(node, list):
        for item in node:
            found.extend(_properties(item))
    return found


@pytest.mark.parametrize("name", SCHEMA_FILES)
def test_every_property_has_a_one_line_description(name: str) -> None:
    schema = load_schema(name)
    # if/then branches only restate properties described at the top level.
    described = {k: v for k, v in schema.items() if k != "allOf"}
    props = _properties(described)
    assert props
    for prop, sub in props:
        description = sub.get("description")
        assert isinstance(description, str), f"{name}: {prop} has no description"
        assert description.strip()
        assert "\n" not in description


def test_schema_folder_holds_exactly_the_contract_schemas() -> None:
    assert sorted(p.name for p in SCHEMAS_DIR.glob("*.json")) == sorted(SCHEMA_FILES)


# --- payloads that must validate ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "payload"),
    [
        pytest.param("request_count.json", REQUEST_COUNT, id="request-count"),
        pytest.param(
            "request_count.json",
            {"ts": 1764331200, "org_id": "o", "key": "k"},
            id="request-count-minimal-int-ts",
        ),
        pytest.param(
            "request_count.json",
            {**REQUEST_COUNT, "count": 1_000_000_000, "path": "/orders", "status": 200},
            id="request-count-max-and-unknown-fields",
        ),
        pytest.param("session.json", SESSION, id="session"),
        pytest.param(
            "session.json",
            {**SESSION, "reset_quota": True, "monitor": {"trigger_limits": [100, 0.5]}},
            id="session-reset-and-edge-limits",
        ),
        pytest.param(
            "session.json",
            {"quota_max": -1, "quota_renewal_rate": -1, "monitor": {"trigger_limits": []}},
            id="session-unlimited",
        ),
        pytest.param("session.json", TYK_SESSION, id="tyk-session"),
        pytest.param(
            "session.json",
            {**TYK_SESSION, "monitor": {"trigger_limits": None}, "meta_data": None},
            id="tyk-session-with-go-nulls",
        ),
        pytest.param("org.json", ORG, id="org"),
        pytest.param("org.json", {**TYK_SESSION, "event_options": {}}, id="org-tyk-shaped"),
        pytest.param("trigger_event.json", TRIGGER_EVENT, id="trigger-event"),
        pytest.param("trigger_event.json", ORG_TRIGGER_EVENT, id="org-trigger-never-renews"),
        pytest.param(
            "trigger_event.json", {**TRIGGER_EVENT, "trigger_limit": "100"}, id="trigger-limit-100"
        ),
        pytest.param(
            "trigger_event.json", {**TRIGGER_EVENT, "trigger_limit": "0.5"}, id="trigger-limit-0.5"
        ),
        pytest.param("portal_event.json", PORTAL_EVENT, id="portal-event"),
        pytest.param(
            "portal_event.json",
            {
                "event": "developer_event.signed_up",
                "org_id": "org1",
                "data": {"email": "new@example.com"},
            },
            id="portal-developer-signed-up",
        ),
        pytest.param("rejected.json", REJECTED, id="rejected"),
        pytest.param(
            "rejected.json",
            {
                **REJECTED,
                **{
                    f"{part}_{field}": None
                    for part in ("key", "value")
                    for field in ("b64", "length", "sha256")
                },
            },
            id="rejected-tombstone-no-key",
        ),
        pytest.param(
            "rejected.json",
            {**REJECTED, "value_b64": "", "value_length": 0},
            id="rejected-empty-value",
        ),
        pytest.param("dead_letter.json", DEAD_LETTER, id="dead-letter-webhook"),
        pytest.param(
            "dead_letter.json",
            {
                **DEAD_LETTER,
                "channel": "email",
                "target": "dev@example.com",
                "event": PORTAL_EVENT,
                "attempts": 1,
                "last_status": None,
                "last_error": "connection refused",
            },
            id="dead-letter-email-no-status",
        ),
    ],
)
def test_valid_payloads(name: str, payload: dict[str, Any]) -> None:
    assert errors(name, payload) == []


def test_every_portal_event_name_of_the_contract_validates() -> None:
    names = [
        f"{option}.{action}"
        for option, actions in {
            "api_event": ("created", "updated", "deleted"),
            "key_event": ("created", "updated", "deleted"),
            "key_request_event": ("submitted", "approved", "rejected"),
            "developer_event": ("signed_up", "approved", "rejected"),
        }.items()
        for action in actions
    ]
    assert len(names) == 12
    assert sorted(load_schema("portal_event.json")["properties"]["event"]["enum"]) == sorted(names)
    for event in names:
        assert errors("portal_event.json", {**PORTAL_EVENT, "event": event}) == []


# --- payloads that must fail -------------------------------------------------------------------


def _without(payload: dict[str, Any], field: str) -> dict[str, Any]:
    return {k: v for k, v in payload.items() if k != field}


def _with_limits(payload: dict[str, Any], limits: list[Any]) -> dict[str, Any]:
    changed = copy.deepcopy(payload)
    changed["monitor"]["trigger_limits"] = limits
    return changed


BAD_PAYLOADS = [
    pytest.param("request_count.json", _without(REQUEST_COUNT, "ts"), id="missing-ts"),
    pytest.param("request_count.json", _without(REQUEST_COUNT, "org_id"), id="missing-org-id"),
    pytest.param("request_count.json", _without(REQUEST_COUNT, "key"), id="missing-key"),
    pytest.param("request_count.json", {**REQUEST_COUNT, "key": ""}, id="empty-key"),
    pytest.param("request_count.json", {**REQUEST_COUNT, "org_id": ""}, id="empty-org-id"),
    pytest.param("request_count.json", {**REQUEST_COUNT, "ts": "1764331200"}, id="string-ts"),
    pytest.param("request_count.json", {**REQUEST_COUNT, "ts": True}, id="bool-ts"),
    pytest.param("request_count.json", {**REQUEST_COUNT, "count": 0}, id="count-0"),
    pytest.param(
        "request_count.json", {**REQUEST_COUNT, "count": 1_000_000_001}, id="count-1000000001"
    ),
    pytest.param("request_count.json", {**REQUEST_COUNT, "count": 1.5}, id="count-1.5"),
    pytest.param("request_count.json", {**REQUEST_COUNT, "api_id": 7}, id="api-id-not-string"),
    pytest.param("request_count.json", [REQUEST_COUNT], id="not-an-object"),
    pytest.param("session.json", _with_limits(SESSION, [80, 0]), id="trigger-limit-0"),
    pytest.param("session.json", _with_limits(SESSION, [101]), id="trigger-limit-101"),
    pytest.param("session.json", _with_limits(SESSION, [-5]), id="trigger-limit-negative"),
    pytest.param("session.json", _with_limits(SESSION, ["80"]), id="trigger-limit-string"),
    pytest.param("session.json", {**SESSION, "quota_max": "1000"}, id="quota-max-string"),
    pytest.param("session.json", {**SESSION, "reset_quota": "yes"}, id="reset-quota-string"),
    pytest.param("org.json", _with_limits(ORG, [0]), id="org-trigger-limit-0"),
    pytest.param("org.json", _with_limits(ORG, [101]), id="org-trigger-limit-101"),
    pytest.param(
        "org.json",
        {**ORG, "event_options": {"trigger_event": {"webhook": "not a url"}}},
        id="org-webhook-not-url",
    ),
    pytest.param(
        "org.json", {**ORG, "event_options": {"key_event": {"email": 1}}}, id="org-email-not-string"
    ),
    pytest.param(
        "portal_event.json",
        {**PORTAL_EVENT, "event": "key_event.exploded"},
        id="unknown-portal-event",
    ),
    pytest.param(
        "portal_event.json",
        {**PORTAL_EVENT, "event": "TriggerExceeded"},
        id="trigger-as-portal-event",
    ),
    pytest.param("portal_event.json", {**PORTAL_EVENT, "org_id": ""}, id="portal-empty-org-id"),
    pytest.param("portal_event.json", _without(PORTAL_EVENT, "data"), id="portal-missing-data"),
    pytest.param(
        "trigger_event.json", {**TRIGGER_EVENT, "trigger_limit": "80.0"}, id="trigger-limit-80.0"
    ),
    pytest.param(
        "trigger_event.json", {**TRIGGER_EVENT, "trigger_limit": 80}, id="trigger-limit-number"
    ),
    pytest.param(
        "trigger_event.json",
        {**TRIGGER_EVENT, "trigger_limit": "82.50"},
        id="trigger-limit-trailing-zero",
    ),
    pytest.param(
        "trigger_event.json", {**TRIGGER_EVENT, "trigger_limit": "0"}, id="trigger-limit-string-0"
    ),
    pytest.param(
        "trigger_event.json",
        {**TRIGGER_EVENT, "trigger_limit": "101"},
        id="trigger-limit-string-101",
    ),
    pytest.param(
        "trigger_event.json", {**TRIGGER_EVENT, "event": "QuotaExceeded"}, id="wrong-event-name"
    ),
    pytest.param("trigger_event.json", {**TRIGGER_EVENT, "subject": "api"}, id="wrong-subject"),
    pytest.param("trigger_event.json", {**TRIGGER_EVENT, "usage": -1}, id="negative-usage"),
    pytest.param("trigger_event.json", {**TRIGGER_EVENT, "usage": 800.5}, id="fractional-usage"),
    pytest.param("trigger_event.json", {**TRIGGER_EVENT, "key": ""}, id="key-trigger-empty-key"),
    pytest.param(
        "trigger_event.json", {**ORG_TRIGGER_EVENT, "key": "abc123"}, id="org-trigger-with-key"
    ),
    pytest.param(
        "trigger_event.json", _without(TRIGGER_EVENT, "period_end"), id="missing-period-end"
    ),
    pytest.param("trigger_event.json", _without(TRIGGER_EVENT, "id"), id="missing-id"),
    pytest.param("trigger_event.json", {**TRIGGER_EVENT, "extra": 1}, id="trigger-extra-field"),
    pytest.param("rejected.json", _without(REJECTED, "value_b64"), id="rejected-missing-value"),
    pytest.param(
        "rejected.json", {**REJECTED, "value_b64": "not base64!"}, id="rejected-value-not-base64"
    ),
    pytest.param("rejected.json", {**REJECTED, "partition": "3"}, id="rejected-partition-string"),
    pytest.param("rejected.json", {**REJECTED, "offset": -1}, id="rejected-negative-offset"),
    pytest.param("dead_letter.json", {**DEAD_LETTER, "channel": "sms"}, id="dlq-wrong-channel"),
    pytest.param("dead_letter.json", {**DEAD_LETTER, "attempts": 0}, id="dlq-zero-attempts"),
    pytest.param("dead_letter.json", {**DEAD_LETTER, "last_status": "503"}, id="dlq-status-string"),
    pytest.param(
        "dead_letter.json", _without(DEAD_LETTER, "last_status"), id="dlq-missing-last-status"
    ),
    pytest.param("dead_letter.json", {**DEAD_LETTER, "event": "…"}, id="dlq-event-not-object"),
]


@pytest.mark.parametrize(("name", "payload"), BAD_PAYLOADS)
def test_bad_payloads_fail(name: str, payload: Any) -> None:
    # Exactly one error: each bad payload fails for the one reason it was made for.
    found = errors(name, payload)
    assert len(found) == 1, f"{name}: {payload!r} gave {found}"
