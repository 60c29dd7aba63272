"""pipeline.portal.digests: windows of key request emails per org address."""

from __future__ import annotations

import pytest

from pipeline.errors import InvalidRecord
from pipeline.portal.digests import DigestItem, DigestWindows


def item(to: str, at: float, n: int = 0) -> DigestItem:
    return DigestItem(to, "acme", {"id": f"evt_{n}", "event": "key_request_event.submitted"}, at)


def test_a_window_closes_an_interval_after_its_first_item() -> None:
    windows = DigestWindows(60)
    windows.add(item("a@x", 100, 1), "r1")
    windows.add(item("b@x", 130, 2), "r2")
    windows.add(item("a@x", 150, 3), "r3")

    assert windows.next_close() == 160
    assert windows.closed(159.9) == []
    [first] = windows.closed(160)
    assert (first.to, [i.request["id"] for i in first.items], first.receipts) == (
        "a@x",
        ["evt_1", "evt_3"],
        ["r1", "r3"],
    )
    assert windows.next_close() == 190
    # The next item for a@x opens a new window.
    windows.add(item("a@x", 170, 4), "r4")
    assert [w.to for w in windows.closed(1000)] == ["b@x", "a@x"]
    assert windows.next_close() is None


def test_items_survive_the_topic_and_bad_ones_are_refused() -> None:
    original = item("a@x", 12.5, 7)
    assert DigestItem.from_json(original.to_json()) == original
    with pytest.raises(InvalidRecord, match="not a digest item"):
        DigestItem.from_json(b'{"to": "a@x"}')
