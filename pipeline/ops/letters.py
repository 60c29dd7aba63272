"""The dead-letter panel (pure): notifications.dlq's records as rows an operator can filter
and pick for redrive.

A row is named by where its record is (``partition:offset``), not by its event id: one event
dead-lettered at two targets is two letters, and a redrive of one must not redrive the other.
Targets are shown as the logs show them (a webhook by scheme, host and port: its path may be
a secret), keys masked as in emails.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

import orjson

from pipeline.delivery.activity import shown_error, shown_target
from pipeline.email.filters import masked_key

#: Rows the panel shows at most (the newest that match).
SHOWN = 200


class LetterFilter(NamedTuple):
    """What an operator narrows the panel to; empty strings match everything."""

    #: Part of the target as shown (host, or masked address).
    target: str = ""
    #: The event's type: TriggerExceeded, key_event, …
    event: str = ""
    #: "4xx", "5xx", "none" (no HTTP answer: a timeout, a refused connection), or a status.
    status: str = ""
    #: Part of the event id or of the last error.
    text: str = ""

    @classmethod
    def from_query(cls, query: Mapping[str, str]) -> LetterFilter:
        return cls(*(query.get(name, "").strip()[:200] for name in cls._fields))

    def admits(self, row: dict[str, Any]) -> bool:
        if self.target and self.target.lower() not in row["target"].lower():
            return False
        if self.event and self.event != row["event"]:
            return False
        if self.status and not _status_matches(self.status, row["last_status"]):
            return False
        text = self.text.lower()
        return not text or text in row["id"].lower() or text in row["last_error"].lower()


def _status_matches(wanted: str, status: int | None) -> bool:
    if wanted == "none":
        return status is None
    if len(wanted) == 3 and wanted.endswith("xx") and wanted[0].isdecimal():
        return status is not None and status // 100 == int(wanted[0])
    return str(status) == wanted


def letter_row(partition: int, offset: int, raw: bytes | None) -> dict[str, Any] | None:
    """One record's row; None for a value that is not a dead letter."""
    try:
        letter = orjson.loads(raw or b"")
    except orjson.JSONDecodeError:
        return None
    if not isinstance(letter, dict) or not isinstance(letter.get("id"), str):
        return None
    event: dict[str, Any] = letter["event"] if isinstance(letter.get("event"), dict) else {}
    key = event.get("key")
    status, attempted_at = letter.get("last_status"), letter.get("last_attempt_at")
    return {
        "ref": f"{partition}:{offset}",
        "id": letter["id"],
        "channel": _text(letter.get("channel")) or "webhook",
        "target": shown_target(_text(letter.get("target"))),
        "event": _text(event.get("event")),
        # A portal event names its org by org_id (as the deliveries panel reads it).
        "org": _text(event.get("org") or event.get("org_id")),
        "key": masked_key(key) if isinstance(key, str) and key else "",
        "attempts": letter.get("attempts"),
        "last_status": status if type(status) is int else None,
        # As the deliveries panel shows errors: a recipient's address or a URL's path never.
        "last_error": shown_error(_text(letter.get("last_error")), event),
        "last_attempt_at": float(attempted_at) if isinstance(attempted_at, int | float) else 0.0,
        "cut": "event_cut" in letter,
    }


def _text(value: Any) -> str:
    """A text field of a letter; anything else (not what a dead letter holds) shows as none."""
    return value if isinstance(value, str) else ""


def letter_rows(records: Iterable[Any]) -> list[dict[str, Any]]:
    """Rows of aiokafka records (``partition``, ``offset``, ``value``), newest attempt first."""
    rows = [letter_row(record.partition, record.offset, record.value) for record in records]
    kept = [row for row in rows if row is not None]
    kept.sort(key=lambda row: row["last_attempt_at"], reverse=True)
    return kept


def picked(records: Iterable[Any], refs: Iterable[str]) -> list[dict[str, Any]]:
    """The dead letters (as stored) at the ``partition:offset`` refs an operator picked."""
    wanted = set(refs)
    letters = []
    for record in records:
        if f"{record.partition}:{record.offset}" not in wanted:
            continue
        try:
            letter = orjson.loads(record.value or b"")
        except orjson.JSONDecodeError:
            continue
        if isinstance(letter, dict) and isinstance(letter.get("event"), dict):
            letters.append(letter)
    return letters
