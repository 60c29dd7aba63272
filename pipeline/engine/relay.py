"""Consume, transform, produce, exactly once: records of some topics turned into records of
others, each source partition's output committed with its consumed offsets in one Kafka
transaction.

The ingest stage re-keys the gateways' own topics (Tyk Pump, APISIX) into gateway.requests
with it. It does not go through faust: under at_least_once (the default) faust's producer is
not transactional, and a crash between a send and the commit of its offsets would count the
same requests twice.

How it holds:
- the relay's consumer group is its own, and its consumer reads committed records only;
- each assigned source partition has a transactional producer of its own, its id made of the
  group, the topic and the partition (Kafka's transactional id per input partition, as faust's
  exactly_once does it): the worker that takes a partition over fences the one that had it and
  aborts that one's open transaction (``init_transactions``);
- a batch's output for a partition and the offset after its last record commit in one
  transaction (``send_offsets_to_transaction``);
- a rebalance waits for the transactions under way, and a batch taken across a rebalance is
  dropped; those of its partitions that are still assigned are sought back to their last
  commit, since its records may be the first of the new assignment, which nothing else would
  read again (found in a test: a batch taken as the relay joined its group was lost);
- the next batch is taken and transformed while the last one commits, and its transactions
  begin once those have ended;
- a new owner reads each partition's committed offset after the fencing, as it stands once no
  transaction holds it pending (``require_stable``: pipeline.engine.stable_offsets), and seeks
  there. aiokafka's own OffsetFetch cannot ask for stable offsets, and a transaction that had
  just ended could still read as before it: its records came twice. Its reset can still hand
  back records from there, so each partition keeps the offset its next record must have at
  least (past what is committed and what is committing), and records below it are skipped;
- any failure of a transaction (fenced, a broker gone, a timeout whose outcome is unknown)
  restarts the relay: new consumer, new producers, committed offsets. Nothing is read past
  what is committed, so nothing is lost or counted twice.
Whoever reads the output must read committed records only (the worker's consumer does).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError

from pipeline.config import Settings
from pipeline.engine.batches import KeyPartitions, append_to
from pipeline.engine.consumer import RawRecordsOf
from pipeline.engine.security import client_options
from pipeline.engine.stable_offsets import stable_committed

log = logging.getLogger(__name__)


#: One record to produce: topic, key, value. A plain tuple: a relay makes one per summed
#: record, and a NamedTuple's constructor cost a tenth of the transform.
Output = tuple[str, bytes | None, bytes]

#: Turns one source partition's fetched records (aiokafka's record objects: ``offset``, ``key``,
#: ``value``, ``timestamp``, ``headers``; in offset order)
#: into the records to produce for them. It must not raise for a bad record: what cannot be
#: turned into output is output too (a rejection).
Transform = Callable[[TopicPartition, Sequence[Any]], Iterable[Output]]
#: Told of each committed transaction: the partition, its records consumed, the outputs.
Committed = Callable[[TopicPartition, int, Sequence[Output]], None]

#: Seconds before a relay that failed starts again.
RESTART_AFTER = 1.0
#: A relay's producers wait this long for a linger: output is sent a batch at a time.
LINGER_MS = 5
#: Keys whose partition a relay remembers (murmur2 in Python costs a few µs a key) before it
#: forgets them all: API keys are many, and a relay runs for months.
REMEMBERED_KEYS = 200_000


class Prepared(NamedTuple):
    """One source partition's share of a batch, ready to commit."""

    tp: TopicPartition
    consumed: int
    #: The offset after its last record: what its transaction commits.
    next_offset: int
    outputs: list[Output]
    #: (topic, partition, aiokafka record batch) to send.
    batches: list[tuple[str, int, Any]]


class Relay:
    """Reads ``topics`` in consumer group ``group_id`` and produces what ``transform`` makes
    of each partition's records, a batch (at most ``max_records``, gathered for at most
    ``within`` seconds) at a time."""

    def __init__(
        self,
        settings: Settings,
        topics: Sequence[str],
        group_id: str,
        transform: Transform,
        *,
        committed: Committed | None = None,
        max_records: int = 20_000,
        within: float = 0.25,
    ) -> None:
        self._settings = settings
        self._topics = list(topics)
        self.group_id = group_id
        self._transform = transform
        self._committed = committed
        self._max_records = max_records
        self._within = within
        self._producers: dict[TopicPartition, AIOKafkaProducer] = {}
        #: Output topic -> where its keys go.
        self._partitions: dict[str, KeyPartitions] = {}
        #: Per assigned partition, the offset its last commit left: where it is read again from
        #: when a batch is dropped.
        self._next: dict[TopicPartition, int] = {}
        #: Per assigned partition, the offset its next record taken must have at least: past
        #: what is committed and what is being committed. Records below it (handed back by a
        #: reset of aiokafka's own) are relayed already or on their way.
        self._expected: dict[TopicPartition, int] = {}
        #: The consumer of the current run: a dropped batch's partitions are sought back.
        self._consumer: AIOKafkaConsumer | None = None
        #: Held by a batch's commits, and by a rebalance.
        self._lock = asyncio.Lock()
        #: Bumped as a revocation begins, as an assignment ends, and by every batch dropped: a
        #: batch taken under an older one is stale.
        self.generation = 0
        self._stopping = asyncio.Event()
        self._stopped = asyncio.Event()

    async def run(self) -> None:
        """Relay until :meth:`stop`, starting again after a failure."""
        try:
            while not self._stopping.is_set():
                try:
                    await self._run_once()
                except Exception as exc:  # a broker gone, fenced, a bug: never a silent stop
                    log.warning(
                        "relay %s: %s (%s); starting again from the committed offsets",
                        self.group_id,
                        type(exc).__name__,
                        exc,
                        exc_info=not isinstance(exc, (KafkaError, OSError)),
                    )
                    try:
                        async with asyncio.timeout(RESTART_AFTER):
                            await self._stopping.wait()
                    except TimeoutError:
                        pass
        finally:
            self._stopped.set()

    async def stop(self) -> None:
        """Finish the batch under way, commit it, and leave the group."""
        self._stopping.set()
        await self._stopped.wait()

    async def _run_once(self) -> None:
        kafka = self._settings.kafka
        consumer = AIOKafkaConsumer(
            **client_options(kafka),
            group_id=self.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            max_partition_fetch_bytes=kafka.max_partition_fetch_bytes,
        )
        consumer.subscribe(self._topics, listener=_Rebalance(self, consumer))
        self._consumer = consumer
        await consumer.start()
        # Records as aiokafka parsed them (offset, key, value), without a ConsumerRecord each:
        # see pipeline.engine.consumer.RawRecordsOf.
        fetcher = consumer._fetcher
        raw = RawRecordsOf(self._topics)
        raw.update(fetcher._records)  # empty: nothing is fetched before the group is joined
        fetcher._records = raw
        # The batch under way commits while the next one is taken and transformed: the
        # transactions' round trips are most of a batch's wall time otherwise.
        committing: asyncio.Task[None] | None = None
        try:
            while not self._stopping.is_set():
                generation = self.generation
                taken = await self._take(consumer)
                prepared = await self._prepare_all(generation, taken) if taken else []
                if committing is not None:
                    await committing  # a producer has one transaction open at a time
                    committing = None
                if prepared:
                    committing = asyncio.create_task(self._commit_all(generation, prepared))
            if committing is not None:
                await committing
        finally:
            if committing is not None:  # failed: its outcome is what the restart reads
                await asyncio.wait([committing])
                if not committing.cancelled():
                    committing.exception()  # reported by the raise that brought us here
            async with self._lock:
                await self._stop_producers(list(self._producers))
            await consumer.stop()

    async def _take(self, consumer: AIOKafkaConsumer) -> dict[TopicPartition, list[Any]]:
        """Records fetched until there are ``max_records`` or the first has waited
        ``within`` seconds; empty when there were none for half a second (or on a stop)."""
        loop = asyncio.get_running_loop()
        taken: dict[TopicPartition, list[Any]] = {}
        count = 0
        deadline: float | None = None
        while count < self._max_records and not self._stopping.is_set():
            wait = 0.5 if deadline is None else max(0.0, deadline - loop.time())
            fetched = await consumer.getmany(
                timeout_ms=int(wait * 1000), max_records=self._max_records - count
            )
            for tp, records in fetched.items():
                taken.setdefault(tp, []).extend(records)
                count += len(records)
            if deadline is None:
                if not count:
                    break
                deadline = loop.time() + self._within
            if loop.time() >= deadline:
                break
        return taken

    async def _prepare_all(
        self, generation: int, taken: dict[TopicPartition, list[Any]]
    ) -> list[Prepared]:
        """Each partition's share of a batch taken under ``generation``, transformed and in
        record batches; none when a rebalance has come since (its partitions are read again
        from their commits)."""
        prepared = []
        for tp, records in taken.items():
            if generation != self.generation:
                async with self._lock:
                    self._rewind(taken)
                return []
            batch = await self._prepare(tp, records)
            if batch.consumed:
                prepared.append(batch)
        return prepared

    async def _prepare(self, tp: TopicPartition, records: list[Any]) -> Prepared:
        """One partition's share of a batch, transformed and in record batches."""
        floor = self._expected.get(tp, 0)
        if records[0].offset < floor:  # handed back by a reset to an older commit: skip them
            records = [record for record in records if record.offset >= floor]
        if not records:
            return Prepared(tp, 0, -1, [], [])
        self._expected[tp] = records[-1].offset + 1
        outputs = list(self._transform(tp, records))
        batches = await self._batches(self._producers[tp], tp, outputs)
        return Prepared(tp, len(records), records[-1].offset + 1, outputs, batches)

    async def _commit_all(self, generation: int, prepared: list[Prepared]) -> None:
        """A batch's transactions, one per source partition, unless a rebalance has come
        since it was taken. A rebalance waits for them (the lock)."""
        async with self._lock:
            if generation != self.generation:
                self._rewind(batch.tp for batch in prepared)
                return
            await asyncio.gather(*(self._commit(batch) for batch in prepared))

    def _rewind(self, tps: Iterable[TopicPartition]) -> None:
        """A batch is dropped: those of its partitions that are still ours are read again from
        their last commit (its records may be the first of a new assignment, which nothing else
        would read again), and any batch taken meanwhile is dropped too. The lock is held."""
        self.generation += 1
        assert self._consumer is not None
        for tp in tps:
            committed = self._next.get(tp)
            if committed is not None:
                self._expected[tp] = committed
                self._consumer.seek(tp, committed)

    async def _commit(self, batch: Prepared) -> None:
        """One partition's output and its next offset, one transaction."""
        tp = batch.tp
        producer = self._producers[tp]
        async with producer.transaction():
            for topic, partition, records in batch.batches:
                await producer.send_batch(records, topic, partition=partition)
            await producer.send_offsets_to_transaction({tp: batch.next_offset}, self.group_id)
        self._next[tp] = batch.next_offset
        if self._committed is not None:
            self._committed(tp, batch.consumed, batch.outputs)

    async def _batches(
        self, producer: AIOKafkaProducer, source: TopicPartition, outputs: list[Output]
    ) -> list[tuple[str, int, Any]]:
        """``outputs`` in record batches per topic and partition (where a keyed send puts each:
        aiokafka's default partitioner), ready to send. A send per record cost about 29 µs,
        half the relay's time; appending to a batch 2 to 5 µs."""
        filling: dict[tuple[str, int], Any] = {}
        batches: list[tuple[str, int, Any]] = []
        for topic, key, value in outputs:
            where = self._partitions.get(topic)
            if where is None:
                partitions = sorted(await producer.partitions_for(topic))
                where = self._partitions[topic] = KeyPartitions(
                    partitions, remember_at_most=REMEMBERED_KEYS
                )
            # A record without a key (a rejection of one) goes where its source partition says.
            partition = where(key) if key is not None else source.partition % len(where.partitions)
            full = append_to(producer, filling, (topic, partition), key, value)
            if full is not None:
                batches.append((topic, partition, full))
        batches += ((topic, partition, batch) for (topic, partition), batch in filling.items())
        return batches

    def transactional_id(self, tp: TopicPartition) -> str:
        return f"{self.group_id}-{tp.topic}-{tp.partition}"

    async def _start_producers(self, consumer: AIOKafkaConsumer, tps: list[TopicPartition]) -> None:
        """A transactional producer per partition (fencing its last owner), then each
        partition's committed offset, read after the fencing."""

        async def start(tp: TopicPartition) -> None:
            producer = AIOKafkaProducer(
                **client_options(self._settings.kafka),
                transactional_id=self.transactional_id(tp),
                enable_idempotence=True,
                acks="all",
                linger_ms=LINGER_MS,
            )
            await producer.start()
            self._producers[tp] = producer

        await asyncio.gather(*(start(tp) for tp in tps))
        committed = await stable_committed(consumer, tps)
        for tp in tps:
            self._next[tp] = self._expected[tp] = committed[tp] or 0
            # Records fetched from aiokafka's own reading of the commit before this one
            # (not stable) are below _expected and skipped; records taken before this one
            # are in a batch that the new generation drops.
            consumer.seek(tp, self._next[tp])

    async def _stop_producers(self, tps: list[TopicPartition]) -> None:
        """Stop the producers of ``tps``; their last commits are the next owner's to read, as
        they stand once stable."""
        producers = [self._producers.pop(tp) for tp in tps if tp in self._producers]
        await asyncio.gather(*(producer.stop() for producer in producers))
        for tp in tps:
            self._next.pop(tp, None)
            self._expected.pop(tp, None)


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    """Producers follow the assignment; a revocation waits for the batch under way."""

    def __init__(self, relay: Relay, consumer: AIOKafkaConsumer) -> None:
        self._relay = relay
        self._consumer = consumer

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        relay = self._relay
        async with relay._lock:
            relay.generation += 1
            await relay._stop_producers(list(revoked))

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        relay = self._relay
        async with relay._lock:
            await relay._start_producers(self._consumer, sorted(assigned))
            # Once each partition is sought to its commit: a batch taken while this ran may
            # hold its first records, read from aiokafka's own position, and is dropped.
            relay.generation += 1
        if assigned:
            log.info("relay %s: %d source partitions", relay.group_id, len(assigned))
