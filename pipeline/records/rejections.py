"""Records that break the contract become ``pipeline.rejected`` records (pure).

A rejection must always fit in a Kafka record, whatever it rejects: a record of any size can
arrive (up to the broker's limit, and a rejection carries its bytes in base64, a third larger),
and a rejection too large to send would stop the agent that sends it. So the copies of the key
and the value are cut at :data:`MAX_COPIED_BYTES`, and each says its original length and
SHA-256; the reason is cut at :data:`MAX_REASON_CHARS`. A rejection is then at most about
180 KiB, far below Kafka's default limit of 1 MiB.
"""

from __future__ import annotations

import base64
import hashlib
import re
from typing import Any

import orjson

#: The most of a rejected record's key, and of its value, copied into the rejection.
MAX_COPIED_BYTES = 64 * 1024
#: The longest reason kept; reasons quote the record at times.
MAX_REASON_CHARS = 1000
#: The longest reason written to a log line: logs never carry a payload.
MAX_LOGGED_REASON_CHARS = 200


def shorten(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, saying how much was left out."""
    if len(text) <= limit:
        return text
    said = f"… ({len(text)} characters in all)"
    return text[: max(limit - len(said), 0)] + said


#: A quoted part of a reason: a value of the record, or an exception's argument.
_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")


def loggable(reason: str) -> str:
    """A reason for a log line: short, and with every quoted part of it left out (reasons may
    quote a record's values, and a log line never carries a key or an address)."""
    return _QUOTED.sub("'…'", shorten(reason, MAX_LOGGED_REASON_CHARS))


def copied(raw: bytes | None) -> bytes | None:
    """The part of a key or value that a rejection copies (and that it is keyed by)."""
    return None if raw is None else raw[:MAX_COPIED_BYTES]


def _copy_fields(name: str, raw: bytes | None) -> dict[str, Any]:
    if raw is None:
        return {
            f"{name}_b64": None,
            f"{name}_length": None,
            f"{name}_sha256": None,
            f"{name}_truncated": False,
        }
    return {
        f"{name}_b64": base64.b64encode(raw[:MAX_COPIED_BYTES]).decode("ascii"),
        f"{name}_length": len(raw),
        f"{name}_sha256": hashlib.sha256(raw).hexdigest(),
        f"{name}_truncated": len(raw) > MAX_COPIED_BYTES,
    }


def rejection(
    *,
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes | None,
    reason: str,
    now: float,
) -> bytes:
    """The Rejected payload: the original bytes (cut to a size that always fits), where they
    came from, and why."""
    record: dict[str, Any] = {
        **_copy_fields("value", value),
        **_copy_fields("key", key),
        "topic": topic,
        "partition": partition,
        "offset": offset,
        "reason": shorten(reason, MAX_REASON_CHARS) or "rejected",
        "ts": now,
    }
    return orjson.dumps(record)
