"""Every fetched record of a partition we own reaches the agents, despite a race in faust.

faust hands its *live* set of active partitions to aiokafka's fetcher, which waits in the
consumer thread while faust keeps changing the set. aiokafka reads an empty set as "every
partition", and the set is empty for a moment when table recovery ends (faust pauses the
changelogs before it resumes the stream partitions). A fetch waiting then returns records of
still-paused stream partitions; faust drops them as not active, while aiokafka's position has
moved past them. faust counts on its seek to the committed offsets after recovery to read them
again, but aiokafka does not move a partition without a committed offset (a topic the group has
not committed on yet), so they were lost for good: the SIGKILL delivery test lost a whole
partition of triggers this way.

:class:`LosslessFetchConsumer` hands the fetcher a snapshot, and seeks back any partition whose
records faust would drop, so they are fetched again once it is resumed: never lost, never
handed to an agent twice.

It also hands the records of bulk topics to their :class:`pipeline.engine.feeds.BulkFeed`
rather than to faust's per-record path, and takes their acknowledgements by the batch; and, with
``bulk_recovery``, applies the records of changelog partitions to their tables a fetch at a time
(:mod:`pipeline.engine.recovery`). Its aiokafka consumer holds a fetch on the broker for at most
``FETCH_MAX_WAIT_MS`` (see there), and builds no ConsumerRecord for the records of bulk topics
(:class:`RawRecordsOf`).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Collection, Mapping, Sequence
from time import monotonic
from typing import Any

from aiokafka.errors import IllegalStateError
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread, ensure_aiokafka_TP
from faust.transport.drivers.aiokafka import Consumer as AIOKafkaDriverConsumer
from faust.types import TP
from faust.types.tuples import ack_lock
from mode.utils.futures import notify

from pipeline.engine import recovery as table_recovery
from pipeline.engine.feeds import BulkFeed, Put, Run


def put_back(
    records: Mapping[TP, Sequence[Any]], wanted: Collection[TP]
) -> tuple[dict[TP, Sequence[Any]], dict[TP, int]]:
    """Split a fetch into the records faust will hand on (those of ``wanted`` partitions) and,
    for every other partition, the offset to read it from again."""
    kept = {tp: batch for tp, batch in records.items() if tp in wanted}
    again = {tp: batch[0].offset for tp, batch in records.items() if tp not in wanted and batch}
    return kept, again


def gaps(previous: int | None, offsets: Sequence[int]) -> list[tuple[int, int]]:
    """The offset ranges ``[start, end)`` skipped between ``previous`` (the last offset read,
    None if unknown) and each offset that follows: transaction markers and compacted records,
    which are never read and so must be filled in for commits to move past them."""
    skipped = []
    for offset in offsets:
        if previous is not None and offset - previous > 1:
            skipped.append((previous + 1, offset))
        previous = offset
    return skipped


#: How long the broker may hold a fetch that finds no new records (faust hard-codes 1.5 s).
#: aiokafka sends one fetch at a time and does not renew it when partitions resume, so a
#: partition resumed while one was held waited for it: after every rebalance (faust resumes
#: the source partitions once the tables are recovered) the first records waited 0.9 to
#: 1.5 s. An idle worker asks the broker up to 5 times a second instead.
FETCH_MAX_WAIT_MS = 200


def as_fetched(tp: Any, record: Any) -> Any:
    """A fetched record handed on as aiokafka parsed it."""
    return record


class RawRecordsOf(OrderedDict[Any, Any]):
    """aiokafka's buffer of fetch results (``Fetcher._records``), whose records of ``topics``
    come out as aiokafka's own record objects (offset, key, value, timestamp, headers) rather
    than a ConsumerRecord each.

    Building a ConsumerRecord (a dataclass of eleven fields) took about 1.1 µs a record, a tenth
    of a worker's time on a backlog of gateway.requests; the bulk feeds know each run's
    partition and need none of the rest. aiokafka builds each partition's records lazily, with
    the ``_consumer_record`` of that partition's PartitionRecords: it is replaced as the
    fetch result comes into the buffer, before any record is built.
    """

    def __init__(self, topics: Collection[str]) -> None:
        super().__init__()
        self.topics = frozenset(topics)

    def __setitem__(self, tp: Any, result: Any) -> None:
        if tp.topic in self.topics:
            partition_records = getattr(result, "_partition_records", None)  # (errors have none)
            if partition_records is not None:
                partition_records._consumer_record = as_fetched
        super().__setitem__(tp, result)


class ShortPollConsumerThread(AIOKafkaConsumerThread):
    """faust's consumer thread, its aiokafka consumer holding fetches for FETCH_MAX_WAIT_MS,
    reading committed records only, and handing the records of bulk topics on as aiokafka
    parsed them (:class:`RawRecordsOf`)."""

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        # Read by the consumer's Fetcher, built when the consumer starts (after this).
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS
        # faust reads uncommitted records unless exactly_once. The ingest stage writes
        # gateway.requests and the org partials in transactions (pipeline.engine.relay): an
        # aborted one, read, would count its requests a second time when its batch is redone.
        consumer._isolation_level = "read_committed"
        return consumer

    async def on_start(self) -> None:
        await super().on_start()
        fetcher = self._ensure_consumer()._fetcher
        buffer = RawRecordsOf(getattr(self.consumer, "bulk_feeds", {}))
        # Empty: nothing is fetched before the group is joined and partitions are assigned.
        for tp, result in fetcher._records.items():
            buffer[tp] = result
        fetcher._records = buffer


class LosslessFetchConsumer(AIOKafkaDriverConsumer):
    """faust's aiokafka consumer, without the fetch race, and with bulk topics."""

    #: Topic name -> the feed its records go to, instead of faust's streams.
    bulk_feeds: Mapping[str, BulkFeed] = {}
    #: Partitions read_again moved back, until the fetch under way then is handled.
    _rewound: set[TP] = frozenset()  # type: ignore[assignment]
    #: Partitions paused because their feed was full, with the feed that was.
    _paused_for_room: dict[TP, BulkFeed] = {}
    #: Apply changelog records to their tables here, a fetch at a time (pipeline.engine.recovery).
    bulk_recovery = False

    def _new_consumer_thread(self) -> AIOKafkaConsumerThread:
        return ShortPollConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def _getmany(self, active_partitions: set[TP] | None, timeout: float) -> Any:
        if active_partitions is None:  # a client-only app reads everything
            return await super()._getmany(None, timeout)
        self._resume_where_room()
        epochs = {topic: feed.epoch for topic, feed in self.bulk_feeds.items()}
        generation = self.app.consumer_generation_id if self.bulk_recovery else None
        records = await super()._getmany(frozenset(active_partitions), timeout)  # type: ignore[arg-type]
        # What faust's getmany will yield, judged now: the fetch may have outlived a pause.
        wanted = self._get_active_partitions() | self._buffered_partitions
        kept, again = put_back(records, wanted)
        for tp, offset in again.items():
            self._seek_back(tp, offset)
        for topic, feed in self.bulk_feeds.items():
            runs = [Run(tp, kept.pop(tp)) for tp in list(kept) if tp.topic == topic]
            if runs:
                await self._feed(feed, runs, epochs[topic])
        if self.bulk_recovery:
            await self._recover(kept, generation)
        # The fetch under way when read_again ran (if any) is handled: forget what it moved.
        self._rewound = set()
        return kept

    async def _recover(self, kept: dict[TP, Sequence[Any]], generation: int | None) -> None:
        """Take the changelog runs out of ``kept`` and apply them to their tables, as faust's
        Recovery would record by record; then end the recovery if that was the last of it."""
        if not self.flow_active or self.app.consumer_generation_id != generation:
            # A rebalance since the fetch began: faust's getmany drops the whole fetch (its
            # Recovery seeks the changelogs again before it resumes them); so do we.
            return
        tables: Any = self.app.tables  # faust types it TableManagerT, without .recovery
        recovery = tables.recovery
        changelogs = tables.changelog_topics
        runs = []
        for tp in list(kept):
            if tp.topic in changelogs:
                table = recovery.tp_to_table.get(tp)
                if table is not None and table_recovery.bulk_recoverable(table):
                    runs.append((tp, kept.pop(tp)))
        if runs:
            # What faust's fetch loop notes per record (changelogs take no acks: no gaps).
            for tp, records in runs:
                if records:
                    self._read_offset[tp] = records[-1].offset
            if table_recovery.apply_runs(recovery, runs):
                table_recovery.note_standbys_ready(recovery)
        if recovery.in_recovery:
            await self._settle(recovery, generation)

    async def _settle(self, recovery: Any, generation: int | None) -> None:
        """While the Recovery waits for its active partitions: move on those read past their
        highwater (only transaction markers or aborted records were left), then end it if no
        partition is behind."""
        reading = self._get_active_partitions()
        if not any(tp in reading for tp in recovery.active_tps):
            # Not resumed yet in this round: the Recovery may still be building the highwaters
            # and offsets, and "nothing remaining" would mean nothing.
            return
        behind = [
            tp
            for tp in table_recovery.lagging(recovery.active_highwaters, recovery.active_offsets)
            if tp in reading
        ]
        if behind:
            positions = await self.positions(behind)
            if not (
                self.flow_active
                and self.app.consumer_generation_id == generation
                and recovery.in_recovery
            ):
                return
            table_recovery.set_offsets(
                recovery.active_offsets,
                table_recovery.read_to_end(positions, recovery.active_highwaters),
            )
        table_recovery.end_recovery_if_done(recovery)

    async def end_offsets(self, tps: Sequence[TP]) -> dict[TP, int]:
        """The end offsets of ``tps`` now, asked of the broker (read_committed under
        exactly_once: the last stable offsets)."""
        thread = self._thread
        consumer = thread._ensure_consumer()
        ends: Mapping[TP, int] = await thread.call_thread(consumer.end_offsets, list(tps))
        return {TP(tp.topic, tp.partition): end for tp, end in ends.items()}

    async def lags(self) -> dict[tuple[str, int], int]:
        """Per assigned partition of the agents' topics (changelogs left out): the last stable
        offset (the high watermark where there is none) minus the fetch position. Partitions
        not fetched from yet are left out: nothing is known of them."""
        thread = self._thread
        consumer = thread._ensure_consumer()
        changelogs = self.app.tables.changelog_topics

        async def read() -> dict[tuple[str, int], int]:
            lags: dict[tuple[str, int], int] = {}
            for tp in consumer.assignment():
                # faust's own leader topic is no input of ours.
                if tp.topic in changelogs or tp.topic.endswith("__assignor-__leader"):
                    continue
                end = consumer.last_stable_offset(tp)
                if end is None:
                    end = consumer.highwater(tp)
                if end is None:
                    continue
                try:
                    position = await consumer.position(tp)
                except IllegalStateError:  # revoked meanwhile
                    continue
                lags[(tp.topic, tp.partition)] = max(0, end - position)
            return lags

        lags: dict[tuple[str, int], int] = await thread.call_thread(read)
        return lags

    async def positions(self, tps: Sequence[TP]) -> dict[TP, int | None]:
        """aiokafka's fetch positions of ``tps`` (None for one no longer assigned), asked of
        the consumer thread in one call."""
        thread = self._thread
        consumer = thread._ensure_consumer()

        async def read() -> dict[TP, int | None]:
            positions: dict[TP, int | None] = {}
            for tp in tps:
                try:
                    positions[tp] = await consumer.position(tp)
                except IllegalStateError:  # revoked meanwhile
                    positions[tp] = None
            return positions

        answer: dict[TP, int | None] = await thread.call_thread(read)
        return answer

    def _pause_for_room(self, feed: BulkFeed, runs: list[Run]) -> None:
        """Refuse runs of a full feed that pauses when full: their partitions are read again
        from these records once the feed has room, and not fetched until then."""
        paused = dict(self._paused_for_room)
        for tp, records in runs:
            if records and self._seek_back(tp, records[0].offset):
                # faust's own pause of a partition whose queue is full. Its set of active
                # partitions holds faust's TP only (it asserts so), not the fetch's aiokafka type.
                faust_tp = TP(tp.topic, tp.partition)
                self.on_buffer_full(faust_tp)
                paused[faust_tp] = feed
        self._paused_for_room = paused

    def _resume_where_room(self) -> None:
        if not self._paused_for_room:
            return
        paused = {}
        for tp, feed in self._paused_for_room.items():
            if feed.has_room():
                self.on_buffer_drop(tp)
            else:
                paused[tp] = feed
        self._paused_for_room = paused

    async def _feed(self, feed: BulkFeed, runs: list[Run], epoch: int) -> None:
        """Hand runs to their feed, doing for them what faust's fetch loop does per record:
        drop what is below the read offset, note skipped offsets as gaps."""
        if feed.pauses and not feed.has_room() and epoch == feed.epoch:
            self._pause_for_room(feed, runs)
            return
        fresh = []
        skipped: list[tuple[TP, int, int]] = []
        for tp, fetched in runs:
            read = self._read_offset[tp]
            # As faust does: an offset equal to the read offset is handed on (the record at a
            # seek's offset); the applied_offsets marks drop it if it was applied already.
            if read is None or fetched[0].offset >= read:  # the usual case: no copy
                records = fetched
            else:
                records = [r for r in fetched if r.offset >= read]
            if not records:
                continue
            contiguous = records[-1].offset - records[0].offset == len(records) - 1
            offsets = [records[0].offset] if contiguous else [r.offset for r in records]
            skipped += [(tp, start, end) for start, end in gaps(read, offsets)]
            fresh.append(Run(tp, records))
        put = await feed.put(fresh, epoch)
        if put is Put.ADDED:
            # Only now: a refused run may follow a move back, and its "gap" would be records.
            for tp, start, end in skipped:
                await self._add_gap(tp, start, end - 1)
            for run in fresh:
                self._read_offset[run.tp] = run.records[-1].offset
        elif put is Put.NO_ROOM:
            self._pause_for_room(feed, fresh)
        elif self.flow_active:
            # Refused after read_again: fetched before it, these would be lost (the position
            # has moved past them) unless read_again already moved their partition back.
            # The read offset stays at the last record handed on, so that offsets skipped
            # before this run still become a gap when it is fetched again.
            for run in fresh:
                if run.tp not in self._rewound:
                    self._seek_back(run.tp, run.records[0].offset)
        # (Refused at a rebalance or a stop: faust reads again from the committed offsets.)

    def stop_flow(self) -> None:
        # A rebalance or a stop: faust clears its stream queues (flow_control.clear) and
        # reads again from the committed offsets; bulk feeds go the same way.
        for feed in self.bulk_feeds.values():
            feed.clear()
        # faust forgets its own buffer-full pauses at the next assignment; so do we.
        self._paused_for_room = {}
        super().stop_flow()

    async def wait_empty(self) -> None:
        # faust waits here (at a rebalance or a stop, before committing) for its streams'
        # events to be acknowledged; records of bulk feeds still being handled count too.
        for feed in self.bulk_feeds.values():
            if not self.should_stop:
                await feed.in_flight.idle()
        await super().wait_empty()

    def read_again(self, offsets: Mapping[TP, int]) -> None:
        """Fetch these partitions again from these offsets. The feeds drop what they hold
        (and a fetch under way has its runs refused), so every partition they held is moved
        back to its first dropped record, and later records never overtake earlier ones."""
        targets = dict(offsets)
        for feed in self.bulk_feeds.values():
            for tp, records in feed.clear():
                targets[tp] = min(targets.get(tp, records[0].offset), records[0].offset)
        for tp, offset in targets.items():
            self._move_back(tp, offset)
        self._rewound = set(targets)

    def _move_back(self, tp: TP, offset: int) -> None:
        """Fetch ``tp`` again from ``offset`` and hand on what comes from there."""
        if self._seek_back(tp, offset):
            self._read_offset[tp] = offset

    def _seek_back(self, tp: TP, offset: int) -> bool:
        """Move the fetch position of ``tp`` back to ``offset``, if ``tp`` is still ours."""
        if tp not in self.assignment():  # a revoked partition is read by its new owner
            return False
        self._thread.seek(tp, offset)
        return True

    def _new_offset(self, tp: TP) -> int | None:
        """faust's answer (the offset to commit), found without its per-offset scan when the
        acknowledged offsets are consecutive and no gap is pending: the usual case for a bulk
        topic, whose batches acknowledge tens of thousands of offsets each. faust's scan (a
        groupby with a lambda per offset) cost 2% of a worker reading a backlog."""
        acked = self._acked[tp]
        if acked and not self._gap[tp]:
            acked.sort()
            first, last = acked[0], acked[-1]
            if last - first == len(acked) - 1:  # no duplicates: ack_offsets keeps them out
                committed = self._committed_offset[tp]
                if committed and first - committed > 1:
                    return None  # as faust: the head of the queue is not there yet
                self._acked_index[tp].difference_update(acked)
                acked.clear()
                return last + 1
        return super()._new_offset(tp)

    def ack_offsets(self, tp: TP, offsets: Sequence[int]) -> None:
        """Acknowledge records of a bulk topic, as ``Consumer.ack`` does for one message."""
        # The partition keys what faust commits; under exactly_once it goes to aiokafka's
        # send_offsets_to_transaction as it is, which refuses anything but aiokafka's own type.
        tp = ensure_aiokafka_TP(tp)
        with ack_lock:
            committed = self._committed_offset[tp]
            index = self._acked_index[tp]
            fresh = [
                offset
                for offset in offsets
                if (committed is None or offset >= committed) and offset not in index
            ]
            index.update(fresh)
            self._acked[tp].extend(fresh)
            self._n_acked += len(fresh)
            notify(self._waiting_for_ack)
        # What faust's livelock check reads as "the stream is processing this partition";
        # streams set it per event, and without it the check logs an error every few seconds.
        monitor = self.app.monitor
        if monitor is not None:
            monitor.stream_inbound_time[tp] = monotonic()
