"""pipeline.engine.consumer: what faust's fetch returns for a partition that is not active any more
is read again later, never dropped; the fetcher sees the partitions active when it was asked;
bulk records reach their feed, and what a feed drops is read again."""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any, NamedTuple

from aiokafka import TopicPartition
from aiokafka.consumer.fetcher import READ_UNCOMMITTED, FetchResult, PartitionRecords
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from aiokafka.record.memory_records import MemoryRecords
from aiokafka.structs import ConsumerRecord
from faust.transport.drivers.aiokafka import Consumer as AIOKafkaDriverConsumer
from faust.types import TP
from hypothesis import example, given
from hypothesis import strategies as st
from intervaltree import IntervalTree
from mode.services import Diag
from mode.utils.logging import CompositeLogger

from pipeline.config import Settings
from pipeline.engine.consumer import (
    FETCH_MAX_WAIT_MS,
    LosslessFetchConsumer,
    RawRecordsOf,
    put_back,
)
from pipeline.engine.feeds import BulkFeed, Run
from pipeline.wiring import build_pipeline

CHANGELOG = TP("app-usage-changelog", 0)
TRIGGERS = TP("quota.triggers", 1)
REQUESTS = TP("gateway.requests", 0)


class Record(NamedTuple):
    offset: int


def records(tp: TP, first: int, count: int) -> list[Record]:
    return [Record(offset) for offset in range(first, first + count)]


class ConsumerThread:
    """Stands in for faust's consumer thread. While its fetch waits, faust changes the set of
    active partitions, as when table recovery ends: the changelogs are paused and the stream
    partitions not resumed yet."""

    def __init__(self, fetched: dict[TP, list[Record]], assigned: set[TP], pause: set[TP]):
        self.fetched = fetched
        self.assigned = assigned
        self.pause = pause
        self.active: set[TP] = set()
        self.asked_for: list[Any] = []
        self.seeks: list[tuple[TP, int]] = []
        #: Runs while the fetch waits, as other tasks would.
        self.during_fetch: Callable[[], None] = lambda: None

    async def getmany(self, partitions: Any, timeout: float) -> dict[TP, list[Record]]:
        self.asked_for.append(None if partitions is None else set(partitions))
        self.active -= self.pause
        self.during_fetch()
        return dict(self.fetched)

    def assignment(self) -> set[TP]:
        return self.assigned

    def seek(self, tp: TP, offset: int) -> None:
        self.seeks.append((tp, offset))


def consumer_over(thread: ConsumerThread, active: set[TP], buffered: set[TP] = frozenset()):
    consumer = object.__new__(LosslessFetchConsumer)
    consumer._thread = thread  # type: ignore[assignment]
    consumer._active_partitions = active
    consumer._buffered_partitions = set(buffered)
    thread.active = active  # the same live set faust keeps changing
    return consumer


async def test_records_of_a_partition_paused_during_the_fetch_are_read_again() -> None:
    fetched = {CHANGELOG: records(CHANGELOG, 40, 3), TRIGGERS: records(TRIGGERS, 20, 63)}
    thread = ConsumerThread(fetched, assigned={CHANGELOG, TRIGGERS}, pause={CHANGELOG})
    active = {CHANGELOG}

    handed_on = await consumer_over(thread, active)._getmany(active, timeout=1.0)

    assert handed_on == {}
    # The fetcher saw the partitions active when it was asked, not the set emptied meanwhile
    # (aiokafka reads an empty set as "every partition").
    assert thread.asked_for == [{CHANGELOG}]
    assert sorted(thread.seeks) == sorted([(CHANGELOG, 40), (TRIGGERS, 20)])


async def test_records_of_active_and_buffered_partitions_are_handed_on() -> None:
    fetched = {REQUESTS: records(REQUESTS, 0, 5), TRIGGERS: records(TRIGGERS, 7, 2)}
    thread = ConsumerThread(fetched, assigned={REQUESTS, TRIGGERS}, pause=set())
    active = {REQUESTS}

    consumer = consumer_over(thread, active, buffered={TRIGGERS})
    handed_on = await consumer._getmany(active, timeout=1.0)

    assert handed_on == fetched
    assert thread.seeks == []


async def test_a_partition_revoked_meanwhile_is_left_to_its_new_owner() -> None:
    fetched = {TRIGGERS: records(TRIGGERS, 0, 4)}
    thread = ConsumerThread(fetched, assigned=set(), pause={TRIGGERS})
    active = {TRIGGERS}

    handed_on = await consumer_over(thread, active)._getmany(active, timeout=1.0)

    assert handed_on == {}
    assert thread.seeks == []


async def test_a_client_only_fetch_still_asks_for_every_partition() -> None:
    thread = ConsumerThread({}, assigned=set(), pause=set())
    await consumer_over(thread, set())._getmany(None, timeout=1.0)
    assert thread.asked_for == [None]


def test_put_back_keeps_the_wanted_and_rereads_the_rest_from_their_first_offset() -> None:
    fetched = {REQUESTS: records(REQUESTS, 3, 2), TRIGGERS: records(TRIGGERS, 9, 1), CHANGELOG: []}
    kept, again = put_back(fetched, {REQUESTS})
    assert kept == {REQUESTS: fetched[REQUESTS]}
    assert again == {TRIGGERS: 9}


def bulk_consumer(thread: ConsumerThread, active: set[TP], feed: BulkFeed) -> Any:
    consumer = consumer_over(thread, active)
    consumer.bulk_feeds = {REQUESTS.topic: feed}
    consumer._read_offset = defaultdict(lambda: None)
    consumer._committed_offset = defaultdict(lambda: None)
    return consumer


OTHER_REQUESTS = TP(REQUESTS.topic, 1)


async def test_read_again_moves_back_every_partition_whose_runs_the_feed_dropped() -> None:
    thread = ConsumerThread({}, assigned={REQUESTS, OTHER_REQUESTS}, pause=set())
    feed = BulkFeed(capacity=100)
    consumer = bulk_consumer(thread, {REQUESTS, OTHER_REQUESTS}, feed)
    await feed.put(
        [Run(REQUESTS, records(REQUESTS, 10, 3)), Run(OTHER_REQUESTS, records(REQUESTS, 5, 2))],
        feed.epoch,
    )

    # The batch that failed held REQUESTS from offset 3; the feed held later runs of both.
    consumer.read_again({REQUESTS: 3})

    assert len(feed) == 0
    assert sorted(thread.seeks) == [(REQUESTS, 3), (OTHER_REQUESTS, 5)]
    assert (consumer._read_offset[REQUESTS], consumer._read_offset[OTHER_REQUESTS]) == (3, 5)


async def test_a_fetch_refused_after_read_again_is_read_again_too() -> None:
    fetched = {REQUESTS: records(REQUESTS, 20, 3), OTHER_REQUESTS: records(REQUESTS, 30, 2)}
    thread = ConsumerThread(fetched, assigned={REQUESTS, OTHER_REQUESTS}, pause=set())
    feed = BulkFeed(capacity=100)
    active = {REQUESTS, OTHER_REQUESTS}
    consumer = bulk_consumer(thread, active, feed)
    # The batch fails while this fetch waits in the consumer thread.
    thread.during_fetch = lambda: consumer.read_again({REQUESTS: 3})

    await consumer._getmany(active, timeout=1.0)

    assert len(feed) == 0  # fetched before read_again: refused
    # REQUESTS was moved back to 3 already; OTHER_REQUESTS goes back to the refused run.
    assert thread.seeks == [(REQUESTS, 3), (OTHER_REQUESTS, 30)]
    assert consumer._rewound == set()


async def test_offsets_skipped_before_a_refused_run_still_become_a_gap() -> None:
    fetched = {OTHER_REQUESTS: records(REQUESTS, 30, 2)}
    thread = ConsumerThread(fetched, assigned={REQUESTS, OTHER_REQUESTS}, pause=set())
    feed = BulkFeed(capacity=100)
    active = {REQUESTS, OTHER_REQUESTS}
    consumer = bulk_consumer(thread, active, feed)
    consumer._read_offset[OTHER_REQUESTS] = 25  # handed on up to 25; 26 to 29 are markers
    thread.during_fetch = lambda: consumer.read_again({REQUESTS: 3})
    await consumer._getmany(active, timeout=1.0)  # refused, moved back to 30
    gaps_added: list[tuple[TP, int, int]] = []

    async def add_gap(tp: TP, start: int, end: int) -> None:
        gaps_added.append((tp, start, end))

    consumer._add_gap = add_gap
    thread.during_fetch = lambda: None
    await consumer._getmany(active, timeout=1.0)  # fetched again from 30: accepted

    assert gaps_added == [(OTHER_REQUESTS, 26, 29)]
    assert consumer._read_offset[OTHER_REQUESTS] == 31


async def test_an_accepted_fetch_moves_the_read_offsets_and_fills_the_feed() -> None:
    fetched = {REQUESTS: records(REQUESTS, 20, 3)}
    thread = ConsumerThread(fetched, assigned={REQUESTS}, pause=set())
    feed = BulkFeed(capacity=100)
    consumer = bulk_consumer(thread, {REQUESTS}, feed)

    handed_to_streams = await consumer._getmany({REQUESTS}, timeout=1.0)

    assert handed_to_streams == {}
    assert consumer._read_offset[REQUESTS] == 22
    assert [r.offset for r in (await feed.take(10, within=0)).runs[0].records] == [20, 21, 22]
    assert thread.seeks == []


RETRY = TP("app-retry-1", 0)


async def test_a_full_feed_that_pauses_refuses_the_fetch_and_pauses_only_its_partition() -> None:
    # A retry tier holds its jobs until due: its full feed must not hold back the fetcher
    # (and the triggers with it), as a full faust stream queue did.
    # Keyed as aiokafka's fetch keys them: its own TopicPartition, not faust's TP.
    fetched_retry = TopicPartition(RETRY.topic, RETRY.partition)
    fetched = {fetched_retry: records(RETRY, 40, 3), REQUESTS: records(REQUESTS, 7, 2)}
    thread = ConsumerThread(fetched, assigned={RETRY, REQUESTS}, pause=set())
    retry_feed = BulkFeed(capacity=2, pauses_when_full=True)
    await retry_feed.put([Run(RETRY, records(RETRY, 30, 2))], retry_feed.epoch)  # full
    requests_feed = BulkFeed(capacity=100)
    active = {RETRY, REQUESTS}
    consumer = bulk_consumer(thread, active, requests_feed)
    consumer.bulk_feeds = {RETRY.topic: retry_feed, REQUESTS.topic: requests_feed}
    consumer._buffered_partitions = set()
    consumer.app = SimpleNamespace(in_recovery=False)

    async with asyncio.timeout(5):  # never waits for room
        await consumer._getmany(set(active), timeout=1.0)

    assert thread.seeks == [(RETRY, 40)]  # read again from the refused run's first record
    assert consumer._read_offset[RETRY] is None
    assert RETRY not in consumer._get_active_partitions()  # not fetched while full
    assert len(retry_feed) == 2
    assert len(requests_feed) == 2  # the other topic flowed

    await retry_feed.take(10, within=0)  # room again
    thread.fetched = {}
    await consumer._getmany(set(consumer._get_active_partitions()), timeout=1.0)

    # faust asserts its active partitions are its own TP: aiokafka's here crashed the fetcher.
    assert RETRY in consumer._get_active_partitions()
    assert all(type(tp) is TP for tp in consumer._get_active_partitions())


class StoppingConsumer(LosslessFetchConsumer):
    """Enough of a consumer for wait_empty: no stream events waiting, commits recorded."""

    should_stop = False  # type: ignore[assignment]

    def __init__(self, feed: BulkFeed) -> None:
        self.bulk_feeds = {REQUESTS.topic: feed}
        self.diag = Diag(self)
        self.log = CompositeLogger(logging.getLogger(__name__))
        self._unacked_messages = set()
        self.ended_transactions = 0

    async def commit_and_end_transactions(self) -> None:
        self.ended_transactions += 1


async def test_a_rebalance_or_stop_waits_for_bulk_records_still_being_handled() -> None:
    feed = BulkFeed(capacity=100)
    consumer = StoppingConsumer(feed)
    feed.in_flight.add()

    waiting = asyncio.create_task(consumer.wait_empty())
    done, _ = await asyncio.wait({waiting}, timeout=0.05)
    assert not done
    assert consumer.ended_transactions == 0  # nothing committed while a delivery is under way

    feed.in_flight.done()
    async with asyncio.timeout(5):
        await waiting
    assert consumer.ended_transactions == 1


def acking_consumer() -> Any:
    consumer = object.__new__(LosslessFetchConsumer)
    consumer._committed_offset = defaultdict(lambda: None)
    consumer._acked_index = defaultdict(set)
    consumer._acked = defaultdict(list)
    consumer._n_acked = 0
    consumer._waiting_for_ack = None
    consumer.app = SimpleNamespace(monitor=None)
    return consumer


def test_acknowledged_offsets_are_kept_under_aiokafkas_own_partition_type() -> None:
    # Under exactly_once faust hands these keys to send_offsets_to_transaction, which refuses
    # faust's TP: the worker crashed at its first commit after a delivery.
    consumer = acking_consumer()

    consumer.ack_offsets(TRIGGERS, [4, 5])
    consumer.ack_offsets(TRIGGERS, [5, 6])  # one repeated: counted once

    (key,) = consumer._acked
    assert type(key) is TopicPartition
    assert key == TopicPartition(TRIGGERS.topic, TRIGGERS.partition)
    assert consumer._acked[key] == [4, 5, 6]
    assert consumer._n_acked == 3


async def test_the_worker_consumer_holds_a_fetch_on_the_broker_briefly(tmp_path) -> None:
    # aiokafka does not renew a held fetch when partitions resume: the hold is their delay.
    pipeline = build_pipeline(Settings(data_dir=tmp_path))
    thread = pipeline.engine.app.consumer._thread

    consumer = thread._create_worker_consumer(pipeline.engine.app.transport)
    try:
        assert consumer._fetch_max_wait_ms == FETCH_MAX_WAIT_MS <= 200
    finally:
        await consumer.stop()
        thread.thread_loop.close()  # made for the thread, which never started


@given(
    # A run of consecutive offsets (what a bulk batch acknowledges), now and then others too.
    acked=st.builds(
        lambda start, length, others: set(range(start, start + length)) | others,
        st.integers(0, 40),
        st.integers(0, 20),
        st.sets(st.integers(0, 60), max_size=5),
    ),
    gaps=st.lists(st.tuples(st.integers(0, 60), st.integers(1, 5)), max_size=3),
    committed=st.none() | st.integers(0, 30),
)
@example(acked={12, 13}, gaps=[], committed=10)  # the next offset to commit not acked yet
@example(acked={11, 12}, gaps=[], committed=10)
@example(acked={11, 12}, gaps=[(13, 2)], committed=10)
def test_the_offset_to_commit_is_faust_s_own(
    acked: set[int], gaps: list[tuple[int, int]], committed: int | None
) -> None:
    # The fast path must answer as faust's scan does, and leave the same offsets behind.
    ours, fausts = acking_consumer(), acking_consumer()
    for consumer in (ours, fausts):
        consumer._gap = defaultdict(IntervalTree)
        consumer._committed_offset[REQUESTS] = committed
        consumer._acked[REQUESTS] = list(acked)
        consumer._acked_index[REQUESTS] = set(acked)
        for start, length in gaps:
            consumer._gap[REQUESTS].addi(start, start + length)

    offset = ours._new_offset(REQUESTS)

    assert offset == AIOKafkaDriverConsumer._new_offset(fausts, REQUESTS)
    assert sorted(ours._acked[REQUESTS]) == sorted(fausts._acked[REQUESTS])
    assert ours._acked_index[REQUESTS] == fausts._acked_index[REQUESTS]


def test_consecutive_acknowledged_offsets_are_committed_past_the_last() -> None:
    consumer = acking_consumer()
    consumer._gap = defaultdict(IntervalTree)
    consumer._committed_offset[REQUESTS] = 100
    consumer.ack_offsets(REQUESTS, range(101, 20_101))

    assert consumer._new_offset(REQUESTS) == 20_101
    assert consumer._acked[REQUESTS] == []  # (faust's TP and aiokafka's hash alike)
    assert not consumer._acked_index[REQUESTS]


def fetch_result(tp: TopicPartition, values: list[bytes]) -> FetchResult:
    """What aiokafka's Fetcher puts in its buffer for one partition of a fetch."""
    builder = DefaultRecordBatchBuilder(
        magic=2,
        compression_type=0,
        is_transactional=0,
        producer_id=-1,
        producer_epoch=-1,
        base_sequence=-1,
        batch_size=1 << 20,
    )
    for offset, value in enumerate(values):
        builder.append(offset, timestamp=None, key=b"key", value=value, headers=[])
    records = PartitionRecords(
        tp, MemoryRecords(bytes(builder.build())), [], 0, None, None, True, READ_UNCOMMITTED
    )
    return FetchResult(tp, assignment=None, partition_records=records, backoff=0)


def test_records_of_bulk_topics_come_out_as_aiokafka_parsed_them() -> None:
    bulk = TopicPartition(REQUESTS.topic, 0)
    other = TopicPartition(TRIGGERS.topic, 1)
    buffer = RawRecordsOf([REQUESTS.topic])

    buffer[bulk] = fetch_result(bulk, [b"a", b"b"])
    buffer[other] = fetch_result(other, [b"c"])

    raw = list(buffer[bulk]._partition_records)
    assert [(record.offset, record.key, record.value) for record in raw] == [
        (0, b"key", b"a"),
        (1, b"key", b"b"),
    ]
    assert not any(isinstance(record, ConsumerRecord) for record in raw)
    (record,) = buffer[other]._partition_records  # every other topic as aiokafka hands it on
    assert isinstance(record, ConsumerRecord)
    assert (record.topic, record.partition, record.value) == (TRIGGERS.topic, 1, b"c")
