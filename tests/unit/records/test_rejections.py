"""pipeline.records.rejections: a rejection always fits in a Kafka record and says what it cut."""

from __future__ import annotations

import base64
import hashlib

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.records.rejections import (
    MAX_COPIED_BYTES,
    MAX_LOGGED_REASON_CHARS,
    MAX_REASON_CHARS,
    copied,
    loggable,
    rejection,
    shorten,
)
from tests.unit.records.test_schemas import errors

#: Kafka's default limit on a record (message.max.bytes), less room for its framing.
KAFKA_RECORD_LIMIT = 1_000_000


def rejected(key: bytes | None, value: bytes | None, reason: str = "bad") -> dict:
    raw = rejection(
        topic="gateway.requests",
        partition=1,
        offset=7,
        key=key,
        value=value,
        reason=reason,
        now=5.0,
    )
    assert len(raw) < KAFKA_RECORD_LIMIT
    record = orjson.loads(raw)
    assert errors("rejected.json", record) == []
    return record


def test_a_small_record_is_copied_whole():
    record = rejected(b"abc", b"not json")

    assert base64.b64decode(record["value_b64"]) == b"not json"
    assert record["value_length"] == 8
    assert record["value_sha256"] == hashlib.sha256(b"not json").hexdigest()
    assert record["value_truncated"] is False
    assert base64.b64decode(record["key_b64"]) == b"abc"
    assert (record["topic"], record["partition"], record["offset"]) == ("gateway.requests", 1, 7)


def test_a_record_without_key_or_value_says_so():
    record = rejected(None, None)

    assert record["value_b64"] is record["value_length"] is record["value_sha256"] is None
    assert record["key_b64"] is None
    assert record["key_truncated"] is False


def test_a_megabyte_record_is_cut_with_its_length_and_hash():
    value = bytes(range(256)) * 4000  # 1,024,000 bytes
    key = b"k" * 900_000

    record = rejected(key, value, reason="x" * 2_000_000)

    assert base64.b64decode(record["value_b64"]) == value[:MAX_COPIED_BYTES]
    assert record["value_truncated"] is True
    assert record["value_length"] == len(value)
    assert record["value_sha256"] == hashlib.sha256(value).hexdigest()
    assert record["key_truncated"] is True
    assert len(record["reason"]) == MAX_REASON_CHARS
    assert record["reason"].endswith("… (2000000 characters in all)")


@settings(max_examples=50, deadline=None)
@given(
    key=st.one_of(st.none(), st.binary(max_size=200_000)),
    value=st.one_of(st.none(), st.binary(max_size=300_000)),
    reason=st.text(max_size=5000),
)
def test_any_record_makes_a_rejection_that_fits(key, value, reason):
    rejected(key, value, reason)


def test_the_rejection_is_keyed_by_what_it_copied():
    assert copied(None) is None
    assert copied(b"abc") == b"abc"
    assert copied(b"k" * (MAX_COPIED_BYTES + 5)) == b"k" * MAX_COPIED_BYTES


@pytest.mark.parametrize(
    ("reason", "logged"),
    [
        ("value is not JSON: unexpected character", "value is not JSON: unexpected character"),
        ("unknown event 'dev@example.com'", "unknown event '…'"),
        (
            'could not be processed: KeyError: "raw-api-key"',
            "could not be processed: KeyError: '…'",
        ),
    ],
)
def test_a_logged_reason_leaves_out_what_it_quotes(reason, logged):
    assert loggable(reason) == logged


def test_a_logged_reason_is_short():
    assert len(loggable("y" * 10_000)) == MAX_LOGGED_REASON_CHARS


def test_shorten_keeps_short_text_and_says_what_it_cut():
    assert shorten("abc", 10) == "abc"
    assert shorten("a" * 100, 40) == "a" * 15 + "… (100 characters in all)"
