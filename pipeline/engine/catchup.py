"""One agent held back until another has read its topic as far as it went when assigned.

The usage agent counts a key's requests against the key's session, and the sessions agent
fills the sessions table from quota.sessions: both start at once when a worker gets its
partitions. Requests applied before the sessions agent has read the sessions that were already
in the topic would be held for no reason (a worker with a fresh app id on a backlog would hold
nearly every request). So the usage agent does not apply a partition's requests until the
sessions agent has handled that partition of quota.sessions up to the end offset it had when
assigned; the org-usage agent waits for the orgs agent the same way. After that, whatever
comes late is held (pipeline.usage.held).

A partition is caught up when its agent has handled the record before that end offset, or
when the fetch position has reached it and every record handed to the agent is handled: the
last offsets of a topic can hold no record (transaction markers, records compacted away).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Protocol

from faust.types import TP

from pipeline.engine.feeds import BulkFeed

log = logging.getLogger(__name__)

#: How often a waiting agent asks again (only until it is caught up, after an assignment).
POLL_SECONDS = 0.05


class Progress(Protocol):
    """What the consumer tells about a topic's partitions (pipeline.engine.consumer)."""

    def assignment(self) -> Iterable[TP]: ...

    async def end_offsets(self, tps: Sequence[TP]) -> Mapping[TP, int]: ...

    async def positions(self, tps: Sequence[TP]) -> Mapping[TP, int | None]: ...


def caught_up(
    target: int,
    *,
    handled: int | None,
    fed: int | None,
    position: int | None,
) -> bool:
    """Whether a partition whose end offset was ``target`` is read that far (pure).

    ``handled``: the last offset its agent handled; ``fed``: the last offset handed to the
    agent since the feed was last cleared; ``position``: the next offset to fetch (None when
    not known, or not asked)."""
    if target <= 0 or (handled is not None and handled >= target - 1):
        return True
    if position is None or position < target:
        return False
    return fed is None or (handled is not None and handled >= fed)


class CatchUp:
    """Holds an agent's batches back until ``followed`` (the feed of another topic) is caught
    up on the same partitions, after each assignment (each epoch of the waiting feed)."""

    def __init__(self, progress: Callable[[], Progress], topic: str, followed: BulkFeed) -> None:
        """``progress`` gives the consumer that reads both topics (made once the worker
        runs)."""
        self._progress = progress
        self.topic = topic
        self._followed = followed
        self._epoch: int | None = None
        #: Partition -> the followed topic's end offset when this epoch began.
        self._targets: dict[int, int] = {}
        self._done: set[int] = set()

    async def wait(self, partitions: Iterable[int], waiting: BulkFeed, epoch: int) -> bool:
        """Return True once ``partitions`` of the followed topic are caught up, or False as
        soon as ``waiting`` is cleared (a rebalance: the batch that waits is stale)."""
        if epoch != self._epoch:
            self._epoch, self._targets, self._done = epoch, {}, set()
        progress = self._progress()
        pending = [partition for partition in partitions if partition not in self._done]
        if not pending:
            return True
        assigned = {tp.partition for tp in progress.assignment() if tp.topic == self.topic}
        # A partition of the followed topic that is not ours (fewer partitions than the
        # waiting topic: a misconfiguration) has nothing to wait for.
        self._done.update(partition for partition in pending if partition not in assigned)
        pending = [partition for partition in pending if partition in assigned]
        unknown = [TP(self.topic, p) for p in pending if p not in self._targets]
        if unknown:
            ends = await progress.end_offsets(unknown)
            self._targets.update({tp.partition: end for tp, end in ends.items()})
        waiting.hold_back(True)
        try:
            while True:
                if waiting.epoch != epoch:
                    return False
                positions = await self._positions(progress, pending)
                pending = [p for p in pending if not self._caught_up(p, positions.get(p))]
                if not pending:
                    return True
                if await waiting.cleared_within(POLL_SECONDS, epoch):
                    return False
        finally:
            waiting.hold_back(False)

    def _caught_up(self, partition: int, position: int | None) -> bool:
        tp = TP(self.topic, partition)
        done = caught_up(
            self._targets.get(partition, 0),
            handled=self._followed.handled_through.get(tp),
            fed=self._followed.fed_through.get(tp),
            position=position,
        )
        if done:
            self._done.add(partition)
        return done

    async def _positions(self, progress: Progress, pending: list[int]) -> dict[int, int | None]:
        """Fetch positions, asked only for partitions that the cheap test leaves undecided."""
        undecided = [
            p
            for p in pending
            if not caught_up(
                self._targets.get(p, 0),
                handled=self._followed.handled_through.get(TP(self.topic, p)),
                fed=None,
                position=None,
            )
        ]
        if not undecided:
            return {}
        found = await progress.positions([TP(self.topic, p) for p in undecided])
        return {tp.partition: position for tp, position in found.items()}
