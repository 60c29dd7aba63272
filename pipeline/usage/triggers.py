"""TriggerExceeded events: their payload and deterministic id (pure)."""

from __future__ import annotations

import hashlib
from typing import Any, Literal

from pipeline.records.checks import format_number
from pipeline.usage.quota import NEVER, Crossing

SubjectType = Literal["key", "org"]

#: Tyk's stock monitor template fields, in order, plus the field its users miss most.
TYK_FIELDS = ("event", "message", "org", "key", "trigger_limit")


def format_limit(threshold: float) -> str:
    """The limit as a plain decimal string: "80", "82.5", "0.00001"; never an exponent.

    The shortest repr of the float keeps every limit distinct, so ids never collide.
    """
    return format_number(threshold)


def trigger_id(
    subject_type: SubjectType, subject: str, period_start: float, threshold: float
) -> str:
    """The same (subject, period, threshold) always gets the same id, so consumers de-duplicate.

    Hashed so the raw key never shows in an id that travels in headers and logs.
    """
    material = f"{subject_type}\x1f{subject}\x1f{period_start!r}\x1f{format_limit(threshold)}"
    return "evt_" + hashlib.sha256(material.encode()).hexdigest()[:32]


def usage_percentage(usage: int, quota_max: float) -> float | int:
    percentage = round(usage / quota_max * 100, 2)
    return int(percentage) if percentage == int(percentage) else percentage


def trigger_event(
    subject_type: SubjectType, *, org_id: str, key: str, quota_max: float, crossing: Crossing
) -> dict[str, Any]:
    """The TriggerEvent payload of the contract for one crossing."""
    subject = key if subject_type == "key" else org_id
    return {
        "event": "TriggerExceeded",
        "message": "Quota trigger reached",
        "org": org_id,
        "key": key if subject_type == "key" else "",
        "trigger_limit": format_limit(crossing.threshold),
        "id": trigger_id(subject_type, subject, crossing.period_start, crossing.threshold),
        "subject": subject_type,
        "usage": crossing.usage,
        "quota_max": int(quota_max) if quota_max == int(quota_max) else quota_max,
        "usage_percentage": usage_percentage(crossing.usage, quota_max),
        "period_start": crossing.period_start,
        "period_end": None if crossing.period_end == NEVER else crossing.period_end,
        "ts": crossing.ts,
    }
