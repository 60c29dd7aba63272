"""The latest-triggers panel (pure): the newest TriggerExceeded events of quota.triggers, each
with what the group's workers know of its deliveries, per target.

The events come from the topic (so the panel is whole after a restart); the outcomes from the
workers' memory of their deliveries since they started (pipeline.delivery.activity), so an
older event may show none.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import orjson

from pipeline.email.filters import masked_key

#: Events the panel shows.
SHOWN = 30


def trigger_rows(
    records: Iterable[Any], outcomes: Mapping[str, dict[str, Any]], shown: int = SHOWN
) -> list[dict[str, Any]]:
    """The ``shown`` newest events (by event time) of ``records`` (aiokafka records of
    quota.triggers), with ``outcomes`` (event id -> the activity's event entry)."""
    rows = []
    for record in records:
        event = _trigger(record.value)
        if event is None:
            continue
        key = event.get("key")
        known = outcomes.get(event["id"]) or {}
        ts = event.get("ts")
        rows.append(
            {
                "id": event["id"],
                "ts": float(ts) if type(ts) in (int, float) and ts else record.timestamp / 1000,
                "subject": event.get("subject") or ("key" if key else "org"),
                "key": masked_key(key) if isinstance(key, str) and key else "",
                "org": str(event.get("org") or ""),
                "trigger_limit": str(event.get("trigger_limit") or ""),
                "usage_percentage": event.get("usage_percentage"),
                "targets": known.get("targets", []),
            }
        )
    rows.sort(key=lambda row: row["ts"], reverse=True)
    return rows[:shown]


def _trigger(raw: bytes | None) -> dict[str, Any] | None:
    """A TriggerExceeded event, its fields the panel shows of their types (as the delivery
    agent reads them: pipeline.delivery.agent.decode_trigger); None for any other value."""
    try:
        event = orjson.loads(raw or b"")
    except orjson.JSONDecodeError:
        return None
    if not isinstance(event, dict) or event.get("event") != "TriggerExceeded":
        return None
    if not all(isinstance(event.get(name), str) for name in ("id", "org", "key", "trigger_limit")):
        return None
    if not event["id"] or type(event.get("usage_percentage")) not in (int, float):
        return None
    return event
