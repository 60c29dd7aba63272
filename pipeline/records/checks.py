"""Checks and formats the contract's decoders share (pure): bounded ids, URLs, addresses,
numbers as written, JSON objects, and reasons that never quote a whole payload."""

from __future__ import annotations

from decimal import Decimal
from email.headerregistry import Address
from typing import Any

import orjson
from yarl import URL

from pipeline.errors import InvalidRecord

#: The longest API key or org id accepted, in characters. Every event about a subject carries
#: its id (in its record key and its value, its webhook and its email): a bound keeps each of
#: them far below Kafka's record limit, whatever a gateway sends. Tyk's keys are 32 to 100
#: characters; a JWT used as a key stays below 4,096.
MAX_ID_LENGTH = 4096
#: The longest webhook URL taken (browsers and proxies stop near here), and the longest email
#: address (RFC 5321's path limit).
MAX_URL_LENGTH = 8192
MAX_EMAIL_LENGTH = 254
#: How much of a value a reason quotes.
QUOTED_CHARS = 80


def format_number(value: float) -> str:
    """A number as a person wrote it: "80", "82.5", "100.0001", "0.00001"; never an exponent.

    The shortest repr of the float keeps distinct numbers distinct.
    """
    return format(Decimal(repr(float(value))).normalize(), "f")


def quoted(value: str) -> str:
    """``value`` in quotes for a reason, cut to QUOTED_CHARS: reasons never carry a payload."""
    if len(value) > QUOTED_CHARS:
        value = value[:QUOTED_CHARS] + f"… ({len(value)} characters)"
    return repr(value)


def decode_json_object(raw: bytes | None) -> dict[str, Any]:
    """Parse one record value as a JSON object."""
    if raw is None:
        raise InvalidRecord("record has no value")
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRecord(f"value is not JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise InvalidRecord(f"value is a JSON {type(value).__name__}, not an object")
    return value


def subject_key(raw: bytes | None, name: str) -> str:
    """The subject a record is keyed by (an API key, an org id), decoded and checked."""
    if not raw:
        raise InvalidRecord(f"the record key must be the {name}")
    try:
        key = raw.decode()
    except UnicodeDecodeError as exc:
        raise InvalidRecord(f"the record key ({name}) is not UTF-8") from exc
    if len(key) > MAX_ID_LENGTH:
        raise InvalidRecord(f"the {name} must be at most {MAX_ID_LENGTH} characters")
    return key


def is_http_url(value: str) -> bool:
    """Whether ``value`` is an absolute http or https URL with a host."""
    try:
        url = URL(value)
    except ValueError:
        return False
    return url.scheme in ("http", "https") and bool(url.raw_host)


def is_email_address(value: str) -> bool:
    """Whether ``value`` is one RFC 5322 address (``local@domain``), as the email module
    parses it."""
    try:
        address = Address(addr_spec=value)
    except Exception:  # the parser raises several types, IndexError included, for bad input
        return False
    return bool(address.username and address.domain)


def validation_message(message: str) -> str:
    """pydantic's message for one error, without the prefix it gives our own validators'."""
    return message.removeprefix("Value error, ")
