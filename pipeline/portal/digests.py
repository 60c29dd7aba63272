"""Digest windows (pure): key_request_event emails to one org address, gathered for an interval
and sent as one (Tyk issue 186).

Items arrive on an internal topic and stay unacknowledged until their digest is sent, so a
restart gathers them again, into the same windows: a window's end comes from its first item's
time, which travels with the item.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any

import msgspec
import orjson

from pipeline.errors import InvalidRecord
from pipeline.records.checks import MAX_EMAIL_LENGTH, MAX_ID_LENGTH


@dataclass(frozen=True, slots=True)
class DigestItem:
    to: str
    org_id: str
    #: The portal event as delivered to webhooks: {"id", "event", "org_id", "data"}.
    request: dict[str, Any]
    #: When the portal agent took it (unix seconds).
    at: float

    def to_json(self) -> bytes:
        return orjson.dumps(
            {"to": self.to, "org_id": self.org_id, "request": self.request, "at": self.at}
        )

    @classmethod
    def from_json(cls, raw: bytes | None) -> DigestItem:
        """Our own internal records; anything else is rejected."""
        try:
            wire = _decode_wire_item(raw or b"")
        except (msgspec.DecodeError, RecursionError) as exc:
            raise InvalidRecord(f"not a digest item: {exc}") from exc
        return cls(wire.to, wire.org_id, wire.request, wire.at)


class _WireItem(msgspec.Struct, frozen=True):
    to: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_EMAIL_LENGTH)]
    org_id: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_ID_LENGTH)]
    request: dict[str, Any]
    at: float


_decode_wire_item = msgspec.json.Decoder(_WireItem).decode


@dataclass
class Window:
    to: str
    org_id: str
    closes_at: float
    items: list[DigestItem] = field(default_factory=list)
    #: Whatever the caller needs to acknowledge the items once the digest is sent.
    receipts: list[Any] = field(default_factory=list)


class DigestWindows:
    """Open windows by address; the first item of an address opens one for ``interval``."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._open: dict[str, Window] = {}

    def add(self, item: DigestItem, receipt: Any) -> None:
        window = self._open.get(item.to)
        if window is None:
            window = self._open[item.to] = Window(item.to, item.org_id, item.at + self.interval)
        window.items.append(item)
        window.receipts.append(receipt)

    def next_close(self) -> float | None:
        """When the next window closes; None when none is open."""
        return min((w.closes_at for w in self._open.values()), default=None)

    def closed(self, now: float) -> list[Window]:
        """Take every window that has closed by ``now``, oldest first."""
        due = sorted((w for w in self._open.values() if w.closes_at <= now), key=_closing)
        for window in due:
            del self._open[window.to]
        return due


def _closing(window: Window) -> float:
    return window.closes_at
