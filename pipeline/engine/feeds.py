"""The records of a busy topic, handed to its agent a fetch at a time.

faust hands every fetched record on one by one: its fetch loop (``Consumer._drain_messages``)
awaits ``Service.wait_first`` per record, which starts four tasks, and each record then becomes
an Event that travels through its stream's queue. That costs about 150 µs per record on two
cores: the usage stage read 3,000 to 5,000 records/s whatever its batch size, while a bare
aiokafka consumer reads and decodes 480,000. So the consumer (pipeline.engine.consumer) hands the
records of ``gateway.requests`` to a :class:`BulkFeed` instead, a partition's run of records per
fetch, and the usage agent takes its batches from there. faust still owns everything else: the
subscription, the assignment, the tables and the offsets, which the agent acknowledges through
faust's own bookkeeping (``LosslessFetchConsumer.ack_offsets``).

What faust does for its streams, the feed does too:
- a rebalance (faust stops the flow and clears every stream queue, then reads again from the
  committed offsets) clears the feed and bumps its epoch; runs fetched under an older epoch are
  dropped, and so is a batch taken before it, if it is not being processed yet;
- a full feed holds the fetcher back, as a full stream queue does; or, for a feed whose agent
  may hold its records for a long time (a retry tier waiting for its jobs' due times), a full
  feed pauses only its own partitions (``pauses_when_full``), so that other topics keep flowing;
- a rebalance and a graceful stop wait for the records an agent is still handling
  (:class:`InFlight`), as faust waits for its streams' unacknowledged events.
"""

from __future__ import annotations

import asyncio
import enum
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from faust.types import TP


class Run(NamedTuple):
    """Records of one partition from one fetch, in offset order.

    The records are aiokafka's own (``DefaultRecord``: ``offset``, ``key``, ``value``,
    ``timestamp``, ``headers``), not ConsumerRecords: see pipeline.engine.consumer.RawRecordsOf.
    Their topic and partition are the run's.
    """

    tp: TP
    records: Sequence[Any]


@dataclass(frozen=True)
class SourceMessage:
    """The fields of a faust Message that tables, transactions and rejections read."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None

    @property
    def tp(self) -> TP:
        return TP(self.topic, self.partition)


@dataclass(frozen=True)
class SourceEvent:
    """Stands in for a faust Event of a record read in bulk (pipeline.engine.tables.acting_for)."""

    message: SourceMessage

    @classmethod
    def of(cls, tp: TP, record: Any) -> SourceEvent:
        """The event of one fetched record of partition ``tp``."""
        return cls(SourceMessage(tp.topic, tp.partition, record.offset, record.key, record.value))

    @property
    def key(self) -> bytes | None:
        return self.message.key

    @property
    def value(self) -> bytes | None:
        return self.message.value


class Batch(NamedTuple):
    """What :meth:`BulkFeed.take` returns: runs taken under one epoch."""

    epoch: int
    runs: list[Run]


class InFlight:
    """How many records taken from a feed are still being handled, one by one.

    faust's ``Consumer.wait_empty`` (at every rebalance and graceful stop, before it commits)
    waits until the events its streams handed out are acknowledged; records of a bulk topic
    never were such events, so an agent that handles them one at a time counts them here,
    and the consumer waits for this count too. Without it, a stop would commit without the
    deliveries under way, and they would be made again after the restart.
    """

    def __init__(self) -> None:
        self._count = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def __len__(self) -> int:
        return self._count

    def add(self) -> None:
        self._count += 1
        self._idle.clear()

    def done(self) -> None:
        self._count -= 1
        if not self._count:
            self._idle.set()

    async def idle(self) -> None:
        """Return once no record is being handled."""
        await self._idle.wait()


class Put(enum.Enum):
    """What became of the runs of a fetch handed to :meth:`BulkFeed.put`."""

    ADDED = "added"
    #: The feed was cleared since the fetch began: they are stale.
    STALE = "stale"
    #: The feed is full and pauses when full: read their partitions again once it has room.
    NO_ROOM = "no_room"


class BulkFeed:
    """Fetched runs waiting for their agent; at most about ``capacity`` records."""

    def __init__(self, capacity: int, *, pauses_when_full: bool = False) -> None:
        self.capacity = capacity
        #: When full, refuse a fetch's runs (their partitions are paused and read again once
        #: there is room) instead of holding back the fetcher, and every other topic with it.
        self.pauses_when_full = pauses_when_full
        #: Set while the agent waits for another topic to be read (pipeline.engine.catchup): a full
        #: feed must not hold back the fetcher then, or that topic would never be read.
        self._holding_back = False
        #: Per partition, the offset of the last record added since the last clear, and of the
        #: last record its agent has handled: what pipeline.engine.catchup reads of this topic.
        self.fed_through: dict[Any, int] = {}
        self.handled_through: dict[Any, int] = {}
        #: Records taken and handled one at a time, if the agent counts them.
        self.in_flight = InFlight()
        self._cleared = asyncio.Event()
        #: Bumped by every :meth:`clear`; runs fetched before then are stale.
        self.epoch = 0
        self._runs: deque[Run] = deque()
        #: When each waiting run came (event loop time), in the same order.
        self._arrived: deque[float] = deque()
        self._size = 0
        self._filled = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()

    def __len__(self) -> int:
        """Records waiting."""
        return self._size

    def has_room(self) -> bool:
        return self._size < self.capacity

    @property
    def pauses(self) -> bool:
        """Whether a full feed refuses runs (pausing their partitions) rather than wait."""
        return self.pauses_when_full or self._holding_back

    def hold_back(self, holding: bool) -> None:
        """Pause when full (while True) rather than hold back the fetcher."""
        self._holding_back = holding
        if holding:
            self._room.set()  # a put waiting for room refuses its runs instead

    def handled(self, tp: Any, offset: int) -> None:
        """The agent has handled the records of ``tp`` up to ``offset``."""
        if offset > self.handled_through.get(tp, -1):
            self.handled_through[tp] = offset

    async def cleared_within(self, seconds: float, epoch: int) -> bool:
        """Wait up to ``seconds``; True as soon as the feed is (or was) cleared since
        ``epoch``: what was taken under it is stale."""
        if epoch != self.epoch:
            return True
        try:
            async with asyncio.timeout(seconds):
                await self._cleared.wait()
        except TimeoutError:
            return False
        return True

    async def put(self, runs: Sequence[Run], epoch: int) -> Put:
        """Add the runs of a fetch that began under ``epoch``, once there is room (or refuse
        them at once if full and :attr:`pauses`); nothing is added unless ADDED."""
        while self._size >= self.capacity and epoch == self.epoch:
            if self.pauses:
                return Put.NO_ROOM
            self._room.clear()
            await self._room.wait()
        if epoch != self.epoch:
            return Put.STALE
        now = asyncio.get_running_loop().time()
        for run in runs:
            if run.records:
                self._runs.append(run)
                self._arrived.append(now)
                self._size += len(run.records)
                self.fed_through[run.tp] = run.records[-1].offset
        self._filled.set()
        return Put.ADDED

    def clear(self) -> list[Run]:
        """Drop every waiting run and make fetches under way stale; returns the dropped runs."""
        self.epoch += 1
        self._cleared.set()  # wakes the waits under way; later ones wait for the next clear
        self._cleared = asyncio.Event()
        dropped = list(self._runs)
        self._runs.clear()
        self._arrived.clear()
        self._size = 0
        self.fed_through = {}
        self._room.set()
        return dropped

    async def take(self, max_records: int, within: float) -> Batch:
        """Wait for a run, then gather runs until there are ``max_records`` records (whole runs,
        so a batch may hold one run more) or the oldest has waited ``within`` seconds.

        The wait counts from the oldest run's arrival, not from this call: runs that came while
        the agent was busy with its last batch for longer than that go at once, rather than
        wait ``within`` more on top (at 13,000 records/s the oldest waited 0.25 s plus the
        batch before plus its own).
        """
        while not self._runs:
            self._filled.clear()
            await self._filled.wait()
        deadline = self._arrived[0] + within
        epoch = self.epoch
        runs: list[Run] = []
        taken = 0
        while taken < max_records:
            if not self._runs:
                self._filled.clear()
                try:
                    async with asyncio.timeout_at(deadline):
                        await self._filled.wait()
                except TimeoutError:
                    break
                if epoch != self.epoch:
                    # Cleared while we waited: what we hold is stale too.
                    return Batch(epoch, runs)
                continue
            run = self._runs.popleft()
            self._arrived.popleft()
            runs.append(run)
            taken += len(run.records)
        self._size -= taken
        self._room.set()
        return Batch(epoch, runs)


def by_partition(runs: Sequence[Run]) -> dict[TP, list[Any]]:
    """The records of ``runs`` per partition, in the order they were fetched."""
    grouped: dict[TP, list[Any]] = {}
    for run in runs:
        grouped.setdefault(run.tp, []).extend(run.records)
    return grouped


def source_events(runs: Sequence[Run]) -> Iterator[SourceEvent]:
    """The records of ``runs`` one by one, in the order they were fetched, as events."""
    for tp, records in runs:
        for record in records:
            yield SourceEvent.of(tp, record)
