"""Records that break the contract become ``pipeline.rejected`` records (pure)."""

from __future__ import annotations

import base64
from typing import Any

import orjson


def _b64(raw: bytes | None) -> str | None:
    return None if raw is None else base64.b64encode(raw).decode("ascii")


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
    """The Rejected payload: the original bytes, where they came from, and why."""
    record: dict[str, Any] = {
        "value_b64": _b64(value),
        "key_b64": _b64(key),
        "topic": topic,
        "partition": partition,
        "offset": offset,
        "reason": reason,
        "ts": now,
    }
    return orjson.dumps(record)
