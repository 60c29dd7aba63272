"""Acknowledging concurrently handled events in their partition's order.

faust commits a partition up to its highest run of acknowledged offsets, and before the
partition's first commit it does not check that the run starts where reading started
(``Consumer._new_offset`` skips that check while the committed offset is unset or 0). Agents
that handle events concurrently finish them out of order, so acknowledging each as it finishes
could commit past events still in flight, and a crash then loses them: our SIGKILL test lost
deliveries that way. Acknowledging only the finished head of each partition's queue makes
every run faust sees start at the oldest unfinished event.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any


class OrderedAcks:
    """Tracks events per partition in arrival order; acknowledges the finished head of each."""

    def __init__(self, ack: Callable[[Any], Awaitable[Any]]) -> None:
        self._ack = ack
        self._queues: dict[Any, deque[list[Any]]] = {}
        self._entries: dict[int, list[Any]] = {}

    def arrived(self, event: Any) -> None:
        """Call in the order events come off the stream."""
        entry = [event, False]
        self._queues.setdefault(event.message.tp, deque()).append(entry)
        self._entries[id(event)] = entry

    async def finished(self, event: Any) -> None:
        """The event's outcome is durable; acknowledge it once every earlier one of its
        partition is too."""
        entry = self._entries.pop(id(event))
        entry[1] = True
        queue = self._queues[event.message.tp]
        while queue and queue[0][1]:
            head, _ = queue.popleft()
            await self._ack(head)

    def pending(self) -> int:
        """Events arrived and not yet acknowledged."""
        return sum(len(queue) for queue in self._queues.values())
