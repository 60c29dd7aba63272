"""The bulk feed that carries gateway.requests past faust's per-record path, the gaps its
consumer fills in, and how batches taken from it are acknowledged or read again."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple

import pytest
from faust.types import TP

from pipeline.engine.consumer import gaps
from pipeline.engine.feeds import BulkFeed, InFlight, Put, Run, SourceEvent, by_partition
from pipeline.engine.gate import BatchGate
from pipeline.engine.runs import handle_each, process_runs

P0 = TP("gateway.requests", 0)
P1 = TP("gateway.requests", 1)


class Record(NamedTuple):
    """The fields of a fetched record (aiokafka's DefaultRecord) the feed's users read: no
    topic or partition, which are its run's."""

    offset: int
    key: bytes | None = None
    value: bytes | None = None


def run(tp: TP, *offsets: int) -> Run:
    return Run(tp, [Record(offset) for offset in offsets])


def offsets(runs: list[Run]) -> list[tuple[int, list[int]]]:
    return [(r.tp.partition, [record.offset for record in r.records]) for r in runs]


async def test_take_gathers_whole_runs_in_fetch_order_up_to_the_batch_size() -> None:
    feed = BulkFeed(capacity=100)
    await feed.put([run(P0, 1, 2), run(P1, 7)], feed.epoch)
    await feed.put([run(P0, 3, 4, 5)], feed.epoch)

    first = await feed.take(max_records=3, within=0)
    rest = await feed.take(max_records=3, within=0)

    assert offsets(first.runs) == [(0, [1, 2]), (1, [7])]
    assert offsets(rest.runs) == [(0, [3, 4, 5])]
    assert len(feed) == 0


async def test_take_waits_for_the_first_run_then_returns_what_came_within_the_time() -> None:
    feed = BulkFeed(capacity=100)
    taking = asyncio.create_task(feed.take(max_records=10, within=0))
    done, _ = await asyncio.wait({taking}, timeout=0.05)
    assert not done  # nothing fetched yet

    await feed.put([run(P0, 1)], feed.epoch)

    async with asyncio.timeout(5):
        batch = await taking
    assert offsets(batch.runs) == [(0, [1])]


async def test_runs_that_waited_past_the_time_while_the_agent_was_busy_go_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    feed = BulkFeed(capacity=100)
    loop = asyncio.get_running_loop()
    now = loop.time
    # The run came a minute ago, while the agent handled its last batch.
    monkeypatch.setattr(loop, "time", lambda: now() - 60)
    await feed.put([run(P0, 1, 2)], feed.epoch)
    monkeypatch.undo()

    async with asyncio.timeout(5):  # not the 30 s a wait counted from this call would take
        batch = await feed.take(max_records=10, within=30)

    assert offsets(batch.runs) == [(0, [1, 2])]


async def test_a_fresh_run_waits_for_more_until_it_has_waited_the_time() -> None:
    feed = BulkFeed(capacity=100)
    await feed.put([run(P0, 1)], feed.epoch)
    taking = asyncio.create_task(feed.take(max_records=10, within=30))
    done, _ = await asyncio.wait({taking}, timeout=0.05)
    assert not done  # gathering: the run came just now

    await feed.put([run(P1, 5)], feed.epoch)
    await feed.put([run(P0, 2)] * 9, feed.epoch)  # ten records: the batch is full

    async with asyncio.timeout(5):
        batch = await taking
    assert offsets(batch.runs)[:2] == [(0, [1]), (1, [5])]


async def test_a_full_feed_holds_the_fetcher_until_the_agent_takes() -> None:
    feed = BulkFeed(capacity=2)
    await feed.put([run(P0, 1, 2)], feed.epoch)
    putting = asyncio.create_task(feed.put([run(P0, 3)], feed.epoch))
    done, _ = await asyncio.wait({putting}, timeout=0.05)
    assert not done

    await feed.take(max_records=10, within=0)

    async with asyncio.timeout(5):
        assert await putting is Put.ADDED
    assert offsets((await feed.take(max_records=10, within=0)).runs) == [(0, [3])]


async def test_clear_drops_waiting_runs_and_makes_fetches_under_way_stale() -> None:
    feed = BulkFeed(capacity=2)
    fetched_under = feed.epoch
    await feed.put([run(P0, 1, 2)], fetched_under)
    held_back = asyncio.create_task(feed.put([run(P0, 3)], fetched_under))
    done, _ = await asyncio.wait({held_back}, timeout=0.05)
    assert not done

    feed.clear()

    async with asyncio.timeout(5):
        assert await held_back is Put.STALE  # released, and its runs dropped
    assert len(feed) == 0
    assert await feed.put([run(P0, 4)], fetched_under) is Put.STALE
    assert await feed.put([run(P0, 1)], feed.epoch) is Put.ADDED
    assert offsets((await feed.take(max_records=10, within=0)).runs) == [(0, [1])]


async def test_a_batch_gathering_when_the_feed_is_cleared_carries_the_old_epoch() -> None:
    feed = BulkFeed(capacity=100)
    await feed.put([run(P0, 1)], feed.epoch)
    gathering = asyncio.create_task(feed.take(max_records=10, within=30))
    done, _ = await asyncio.wait({gathering}, timeout=0.05)
    assert not done  # holds one record, waits for more

    feed.clear()
    await feed.put([run(P0, 1)], feed.epoch)

    async with asyncio.timeout(5):
        batch = await gathering
    assert batch.epoch != feed.epoch  # so the agent drops it


def test_by_partition_keeps_each_partitions_records_in_fetch_order() -> None:
    grouped = by_partition([run(P0, 1, 2), run(P1, 9), run(P0, 3)])

    assert {tp.partition: [r.offset for r in records] for tp, records in grouped.items()} == {
        0: [1, 2, 3],
        1: [9],
    }


def test_a_source_event_carries_what_tables_and_rejections_read() -> None:
    event = SourceEvent.of(TP("gateway.requests", 3), Record(42, b"k", b"v"))

    assert event.message.tp == TP("gateway.requests", 3)
    assert (event.message.offset, event.key, event.value) == (42, b"k", b"v")


@pytest.mark.parametrize(
    ("previous", "read", "skipped"),
    [
        (None, [5, 6, 7], []),
        (4, [5, 6, 7], []),
        (2, [5, 6], [(3, 5)]),
        (4, [5, 8, 9, 12], [(6, 8), (10, 12)]),
    ],
)
def test_gaps_are_the_offsets_skipped_between_records_read(
    previous: int | None, read: list[int], skipped: list[tuple[int, int]]
) -> None:
    assert gaps(previous, read) == skipped


class Consumer:
    """Records what process_runs asks of the consumer."""

    def __init__(self) -> None:
        self.acked: list[tuple[int, list[int]]] = []
        self.read_again_from: list[dict[int, int]] = []

    def ack_offsets(self, tp: TP, offsets: list[int]) -> None:
        self.acked.append((tp.partition, list(offsets)))

    def read_again(self, offsets: dict[TP, int]) -> None:
        self.read_again_from.append({tp.partition: offset for tp, offset in offsets.items()})


async def process_one_batch(
    feed: BulkFeed, consumer: Consumer, handle: Callable[[dict[TP, list[Any]]], Awaitable[None]]
) -> None:
    """Run process_runs until ``handle`` has been given one batch (or raised)."""
    handled = asyncio.Event()

    async def handle_once(fetched: dict[TP, list[Any]]) -> None:
        try:
            await handle(fetched)
        finally:
            handled.set()

    processing = asyncio.create_task(
        process_runs(feed, BatchGate(), consumer, handle_once, max_records=100, within=0)
    )
    async with asyncio.timeout(5):
        await handled.wait()
    # process_runs acknowledges (or raises) before it next waits, so before we run again.
    processing.cancel()
    with contextlib.suppress(asyncio.CancelledError, RuntimeError):
        await processing


async def test_a_handled_batch_is_acknowledged_per_partition() -> None:
    feed, consumer = BulkFeed(capacity=100), Consumer()
    await feed.put([run(P0, 1, 2), run(P1, 5), run(P0, 3)], feed.epoch)
    seen: list[dict[int, list[int]]] = []

    async def handle(fetched: dict[TP, list[Any]]) -> None:
        seen.append({tp.partition: [r.offset for r in rs] for tp, rs in fetched.items()})

    await process_one_batch(feed, consumer, handle)

    assert seen == [{0: [1, 2, 3], 1: [5]}]
    assert sorted(consumer.acked) == [(0, [1, 2, 3]), (1, [5])]
    assert consumer.read_again_from == []


async def test_a_batch_whose_handler_fails_is_not_acknowledged_and_read_again() -> None:
    feed, consumer = BulkFeed(capacity=100), Consumer()
    await feed.put([run(P0, 7, 8), run(P1, 4)], feed.epoch)

    async def handle(fetched: dict[TP, list[Any]]) -> None:
        raise RuntimeError("the broker went away")

    await process_one_batch(feed, consumer, handle)

    assert consumer.acked == []
    assert consumer.read_again_from == [{0: 7, 1: 4}]


class Handling:
    """A handler for handle_each whose calls finish when the test says so."""

    def __init__(self, fails: set[int] = frozenset()) -> None:
        self.started: list[int] = []
        self.release: dict[int, asyncio.Event] = {}
        self.fails = fails
        self.changed = asyncio.Event()

    async def __call__(self, event: Any) -> None:
        offset = event.message.offset
        self.started.append(offset)
        self.release[offset] = asyncio.Event()
        self.changed.set()
        await self.release[offset].wait()
        if offset in self.fails:
            raise RuntimeError("a bug in the handler")

    async def until_started(self, count: int) -> None:
        async with asyncio.timeout(5):
            while len(self.started) < count:
                self.changed.clear()
                await self.changed.wait()


class Rejections:
    """What handle_each rejects, and whether rejecting works (the broker answers)."""

    def __init__(self, *, works: bool = True) -> None:
        self.rejected: list[tuple[int, str]] = []
        self.works = works

    async def __call__(self, event: Any, reason: str) -> None:
        if not self.works:
            raise ConnectionError("no broker")
        self.rejected.append((event.message.offset, reason))


@contextlib.asynccontextmanager
async def handling_each(
    feed: BulkFeed,
    consumer: Consumer,
    handle: Handling,
    limit: int = 10,
    reject: Rejections | None = None,
):
    task = asyncio.create_task(
        handle_each(
            feed,
            consumer,
            handle,
            limit=limit,
            max_records=100,
            reject=reject if reject is not None else Rejections(),
        )
    )
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


class WatchedInFlight(InFlight):
    """Lets a test wait for the count to come down to a given number."""

    def __init__(self) -> None:
        super().__init__()
        self._changed = asyncio.Event()

    def done(self) -> None:
        super().done()
        self._changed.set()

    async def down_to(self, count: int) -> None:
        while len(self) > count:
            self._changed.clear()
            await self._changed.wait()


async def test_records_handled_out_of_order_are_acknowledged_in_partition_order() -> None:
    feed, consumer, handle = BulkFeed(capacity=100), Consumer(), Handling()
    feed.in_flight = WatchedInFlight()
    await feed.put([run(P0, 1, 2, 3), run(P1, 8)], feed.epoch)

    async with handling_each(feed, consumer, handle):
        await handle.until_started(4)
        assert len(feed.in_flight) == 4
        for offset in (3, 2, 8):
            handle.release[offset].set()
        async with asyncio.timeout(5):
            await feed.in_flight.down_to(1)  # the released ones have finished
        assert consumer.acked == [(1, [8])]  # 2 and 3 wait for 1

        handle.release[1].set()
        async with asyncio.timeout(5):
            await feed.in_flight.idle()

    assert consumer.acked == [(1, [8]), (0, [1]), (0, [2]), (0, [3])]


async def test_records_taken_before_a_rebalance_and_not_started_are_left_to_read_again() -> None:
    feed, consumer, handle = BulkFeed(capacity=100), Consumer(), Handling()
    await feed.put([run(P0, 1, 2, 3)], feed.epoch)

    async with handling_each(feed, consumer, handle, limit=1):
        await handle.until_started(1)
        feed.clear()  # a rebalance: faust reads again from the committed offsets
        handle.release[1].set()
        async with asyncio.timeout(5):
            await feed.in_flight.idle()
        await feed.put([run(P0, 1)], feed.epoch)  # read again
        await handle.until_started(2)

    assert handle.started == [1, 1]  # 2 and 3 were dropped, not handled


async def test_a_record_whose_handler_fails_is_rejected_and_its_partition_goes_on() -> None:
    feed, consumer, handle = BulkFeed(capacity=100), Consumer(), Handling(fails={1})
    reject = Rejections()
    await feed.put([run(P0, 1, 2), run(P1, 5)], feed.epoch)

    async with handling_each(feed, consumer, handle, reject=reject):
        await handle.until_started(3)
        for release in handle.release.values():
            release.set()
        async with asyncio.timeout(5):
            await feed.in_flight.idle()

    assert reject.rejected == [(1, "could not be processed: RuntimeError: a bug in the handler")]
    assert sorted(consumer.acked) == [(0, [1]), (0, [2]), (1, [5])]


async def test_a_failed_record_that_cannot_be_rejected_holds_back_its_partition_only() -> None:
    feed, consumer, handle = BulkFeed(capacity=100), Consumer(), Handling(fails={1})
    await feed.put([run(P0, 1, 2), run(P1, 5)], feed.epoch)

    async with handling_each(feed, consumer, handle, reject=Rejections(works=False)):
        await handle.until_started(3)
        for release in handle.release.values():
            release.set()
        async with asyncio.timeout(5):
            await feed.in_flight.idle()  # what a rebalance waits for

    assert consumer.acked == [(1, [5])]  # 1 is not rejected: neither it nor 2 is committed


async def test_a_wait_on_the_feed_ends_early_when_it_is_cleared() -> None:
    feed = BulkFeed(capacity=10)
    epoch = feed.epoch
    assert not await feed.cleared_within(0.01, epoch)

    waiting = asyncio.create_task(feed.cleared_within(60, epoch))
    feed.clear()
    async with asyncio.timeout(5):
        assert await waiting
    assert await feed.cleared_within(60, epoch)  # cleared since: at once


async def test_jobs_start_when_due_and_a_rebalance_drops_those_still_waiting() -> None:
    feed, consumer, handle = BulkFeed(capacity=100), Consumer(), Handling()
    now = time.time()
    due = {b"now": now - 1, b"later": now + 3600}
    tp = P0
    jobs = [Record(1, None, b"now")]
    jobs.append(Record(2, None, b"later"))
    await feed.put([Run(tp, jobs)], feed.epoch)

    task = asyncio.create_task(
        handle_each(
            feed,
            consumer,
            handle,
            limit=10,
            max_records=100,
            reject=Rejections(),
            due=due.__getitem__,
        )
    )
    try:
        await handle.until_started(1)
        assert handle.started == [1]  # 2 waits for its due time, an hour away
        feed.clear()  # a rebalance
        handle.release[1].set()
        async with asyncio.timeout(5):
            await feed.in_flight.idle()
        await feed.put([Run(tp, [Record(3, None, b"now")])], feed.epoch)
        await handle.until_started(2)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    assert handle.started == [1, 3]  # 2 was dropped when the wait ended: read again later
