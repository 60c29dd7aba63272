"""Tyk Pump's Kafka pump messages: which count for the key, which for the org only."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from pipeline.config import TykPumpSource
from pipeline.devtools.gateway_logs import tyk_pump_message, tyk_raw_response
from pipeline.errors import InvalidRecord
from pipeline.ingest.hits import Hit
from pipeline.ingest.tyk_pump import counted_for_key, made_by_tyk, tyk_pump_reader
from pipeline.records.checks import MAX_ID_LENGTH
from tests.unit.ingest.reading import hits_of

RECORDED = Path(__file__).parents[2] / "data" / "gateways" / "tyk-pump.jsonl"
KEY = "5e9d9544a1dcd60001d0ed20a6ab77653d8da938f452bb8cc9b2b8e3"
ORG = "5e9d9544a1dcd60001d0ed20"
ORDERS, STATUS = "41433797848f41a558c1573d3e55a410", "b2c0a1f7e39d4c5e8a6b7c8d9e0f1a2b"
T = 1714558530  # 2024-05-01T10:15:30Z

read = tyk_pump_reader(TykPumpSource(format="tyk-pump", topic="tyk"))


def test_recorded_messages_count_as_the_gateway_counted_them() -> None:
    hits = [hit for line in RECORDED.read_bytes().splitlines() for hit in hits_of(read, line)]
    assert hits == [
        Hit(T + 0.123457, ORG, KEY, ORDERS),  # reached the upstream; nanoseconds to a float
        Hit(T + 0.2, ORG, "", ORDERS),  # 401 no key: the org only
        Hit(T + 0.3, ORG, "", ORDERS),  # the key's rate limit refuses before its quota
        Hit(T + 0.4, ORG, KEY, ORDERS),  # Tyk's quota counts what it refuses
        Hit(T + 0.5, ORG, "", ORDERS),  # access disallowed, made by Tyk: before the quota
        Hit(T + 0.6, ORG, KEY, ORDERS),  # the upstream's own 403: counted
        Hit(T + 0.7, ORG, "", STATUS),  # keyless, and +02:00 read as such
        Hit(T + 0.8, ORG, "", STATUS),  # keyless with hash_keys: the hash of no key
        Hit(T + 1.0, ORG, "a5f3e8c1d2b4f607", ORDERS),  # a hashed key, as sessions are listed
    ]


def test_the_recorded_records_are_the_pump_s_twenty_fields_and_its_meta_data() -> None:
    for line in RECORDED.read_bytes().splitlines():
        assert len(orjson.loads(line)) == 21


@pytest.mark.parametrize(
    ("code", "raw_response", "counted"),
    [
        (200, "", True),
        (400, "", True),  # request validation comes after the quota
        (500, "", True),
        (401, "", False),
        (403, "", False),
        (429, "", False),
        (429, tyk_raw_response(429, "API Rate Limit Exceeded"), True),  # the API's, after
        (429, tyk_raw_response(429, "Rate Limit Exceeded"), False),  # the key's, before
        (429, tyk_raw_response(429, "slow down", by_tyk=False), True),
        (403, tyk_raw_response(403, "Quota exceeded"), True),
        (401, tyk_raw_response(401, "Key has expired, please renew"), False),
        (403, "not base64 at all!", False),
    ],
)
def test_refusal_codes_count_for_the_key_only_when_the_response_says_so(
    code: int, raw_response: str, counted: bool
) -> None:
    assert counted_for_key(code, raw_response, frozenset({401, 403, 429})) is counted


def test_a_decoded_raw_response_is_read_too() -> None:
    wire = 'HTTP/1.1 403 Forbidden\r\nX-Generator: tyk.io\r\n\r\n{"error": "Quota exceeded"}'
    assert made_by_tyk(wire) == (True, "Quota exceeded")
    assert made_by_tyk("HTTP/1.1 200 OK\r\n\r\n<html>") == (False, "")


def test_refused_codes_are_configurable() -> None:
    everything = tyk_pump_reader(TykPumpSource(format="tyk-pump", topic="t", refused_codes=()))
    message = tyk_pump_message(key="k", org_id="o", api_id="a", ts=T, response_code=429)
    assert hits_of(everything, message) == [Hit(T, "o", "k", "a")]


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (None, "has no value"),
        (b"not json", "not a Tyk Pump analytics record"),
        (b"[]", "not a Tyk Pump analytics record"),
        (b'{"org_id": "o", "api_key": "k"}', "timestamp"),
        (b'{"timestamp": "2024-05-01T10:15:30", "org_id": "o"}', "timezone"),
        (b'{"timestamp": "yesterday", "org_id": "o"}', "datetime"),
        (b'{"timestamp": "2024-05-01T10:15:30Z", "org_id": ""}', "org_id is empty"),
        (b'{"timestamp": "2024-05-01T10:15:30Z", "org_id": "o", "response_code": "200"}', "int"),
        (
            b'{"timestamp": "2024-05-01T10:15:30Z", "org_id": "o", "api_key": "'
            + b"k" * (MAX_ID_LENGTH + 1)
            + b'"}',
            "at most",
        ),
    ],
)
def test_a_record_that_cannot_be_mapped_says_why(value: bytes | None, reason: str) -> None:
    with pytest.raises(InvalidRecord, match=reason):
        hits_of(read, value)
