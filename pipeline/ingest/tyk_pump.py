"""Tyk Pump's Kafka pump messages (tyk-pump ``pumps/kafka.go``), read into hits (pure).

Each message is one analytics record of the gateway, as flat JSON without a key: ``timestamp``
(Go's RFC 3339 with nanoseconds), ``api_key``, ``org_id``, ``api_id``, ``response_code``,
``raw_response``, … and the pump's static ``meta_data`` fields at the top level.

Which records count against the key's quota follows the gateway's middleware chain
(gateway/api_loader.go): authentication, key expiry and access rights refuse a request before
the quota check, and so does the key's rate limit (session_manager.go ``ForwardMessage``
checks it first); the quota check counts every request it sees, the ones it refuses with
"Quota exceeded" included; everything after it (the API's own rate limit, validation, cache,
the upstream's answer, proxy errors) has counted. Every record counts for its org: Tyk's org
quota (``enforce_org_quotas``) is checked before authentication. See docs/ingest.md.
"""

from __future__ import annotations

import binascii
from datetime import datetime
from typing import Annotated

import msgspec
import orjson

from pipeline.config import TykPumpSource
from pipeline.errors import InvalidRecord
from pipeline.ingest.hits import AddHit, Reader
from pipeline.records.checks import MAX_ID_LENGTH

#: Tyk's own refusals that counted against the key's quota all the same.
COUNTED_REFUSALS = frozenset({"Quota exceeded", "API Rate Limit Exceeded"})
#: What ``api_key`` holds for a request without a key when the gateway hashes keys
#: (``storage.HashKey("")`` is murmur32 of nothing): the same as an empty one.
HASH_OF_NO_KEY = "00000000"


class _Record(msgspec.Struct, gc=False):
    """The fields of an analytics record that quota reads; the others are ignored."""

    timestamp: Annotated[datetime, msgspec.Meta(tz=True)]
    org_id: str = ""
    api_key: str = ""
    api_id: str = ""
    response_code: int = 0
    raw_response: str = ""


_decode = msgspec.json.Decoder(_Record).decode


def made_by_tyk(raw_response: str) -> tuple[bool, str] | None:
    """From a detailed record's ``raw_response`` (the response as sent, base64 unless the pump
    decodes it): whether Tyk made it (its ``X-Generator: tyk.io`` header) and the error
    message of its body; None when the record carries no response to tell."""
    if not raw_response:
        return None
    if raw_response.startswith("HTTP/"):
        wire = raw_response.encode()
    else:
        try:
            wire = binascii.a2b_base64(raw_response, strict_mode=True)
        except (binascii.Error, ValueError):
            return None
    head, _, body = wire.partition(b"\r\n\r\n")
    lines = head.lower().split(b"\r\n")
    if not lines or not lines[0].startswith(b"http/"):
        return None
    by_tyk = any(line.startswith(b"x-generator:") and b"tyk.io" in line for line in lines[1:])
    try:
        error = orjson.loads(body).get("error", "")
    except (orjson.JSONDecodeError, AttributeError):
        error = ""
    return by_tyk, error if isinstance(error, str) else ""


def counted_for_key(code: int, raw_response: str, refused_codes: frozenset[int]) -> bool:
    """Whether a keyed record counted against its key's quota."""
    if code not in refused_codes:
        return True
    made = made_by_tyk(raw_response)
    if made is None:
        return False  # Tyk's own refusals are what these codes mostly are
    by_tyk, error = made
    return not by_tyk or error in COUNTED_REFUSALS


def tyk_pump_reader(source: TykPumpSource) -> Reader:
    """The reader of ``source``'s messages: one hit each."""
    refused = frozenset(source.refused_codes)

    def read(raw: bytes | None, add: AddHit) -> None:
        if raw is None:
            raise InvalidRecord("a Tyk Pump message has no value")
        try:
            record = _decode(raw)
        except (msgspec.DecodeError, RecursionError) as exc:
            raise InvalidRecord(f"not a Tyk Pump analytics record: {exc}") from None
        org_id, key = record.org_id, record.api_key
        if not org_id:
            raise InvalidRecord("org_id is empty: the record names no organisation to count for")
        if len(org_id) > MAX_ID_LENGTH or len(key) > MAX_ID_LENGTH:
            raise InvalidRecord(f"org_id and api_key must be at most {MAX_ID_LENGTH} characters")
        if key == HASH_OF_NO_KEY or (
            key and not counted_for_key(record.response_code, record.raw_response, refused)
        ):
            key = ""
        add(record.timestamp.timestamp(), org_id, key, record.api_id or None)

    return read
