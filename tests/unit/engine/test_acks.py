"""pipeline.engine.acks: concurrently handled events are acknowledged in their partition's order."""

from __future__ import annotations

from typing import NamedTuple

from pipeline.engine.acks import OrderedAcks


class Message(NamedTuple):
    tp: str
    offset: int


class Event(NamedTuple):
    message: Message


def event(tp: str, offset: int) -> Event:
    return Event(Message(tp, offset))


async def test_an_event_is_acknowledged_only_after_every_earlier_one_of_its_partition() -> None:
    acked: list[tuple[str, int]] = []

    async def ack(e: Event) -> None:
        acked.append((e.message.tp, e.message.offset))

    acks = OrderedAcks(ack)
    events = [event("a", 0), event("a", 1), event("b", 7), event("a", 2)]
    for e in events:
        acks.arrived(e)

    await acks.finished(events[3])  # a/2 finishes first: a/0 and a/1 are still in flight
    await acks.finished(events[1])
    assert acked == []
    await acks.finished(events[2])  # another partition does not wait for "a"
    assert acked == [("b", 7)]
    await acks.finished(events[0])
    assert acked == [("b", 7), ("a", 0), ("a", 1), ("a", 2)]
    assert acks.pending() == 0
