"""Helpers every agent shares: batches under the commit gate, rejecting a record, grouping a
batch by source partition, handling events concurrently within a bound."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any, TypeVar

from faust.types import TP

from pipeline.acks import OrderedAcks
from pipeline.app import Pipeline
from pipeline.bulk import BulkFeed, SourceEvent, by_partition, source_events
from pipeline.errors import InvalidRecord
from pipeline.metrics import REJECTED
from pipeline.rejections import rejection
from pipeline.transactions import BatchGate, emit

log = logging.getLogger(__name__)

T = TypeVar("T")


async def gated_batches(
    pipeline: Pipeline, stream: Any, max_records: int, within: float
) -> AsyncIterator[list[Any]]:
    """Batches of events, each processed and acknowledged while it holds the commit gate.

    The agent processes a batch while this generator is suspended inside the gate; asking for
    the next batch acknowledges the events and leaves the gate, before any commit can run.
    """
    async for events in stream.take_events(max_records, within=within):
        async with pipeline.gate.batch():
            yield events
            for event in events:
                await stream.ack(event)


async def process_runs(
    feed: BulkFeed,
    gate: BatchGate,
    consumer: Any,
    handle: Callable[[dict[TP, list[Any]]], Awaitable[None]],
    *,
    max_records: int,
    within: float,
) -> None:
    """Hand batches of a bulk feed, per partition, to ``handle``, each under the commit gate
    (as :func:`gated_batches` does with a stream's events), and acknowledge each handled one.

    A batch whose handler raises is not acknowledged, and its partitions are read again from
    its first records (``consumer.read_again``): later batches must not move the
    applied_offsets marks past records that were never applied.
    """
    while True:
        batch = await feed.take(max_records, within)
        async with gate.batch():
            if batch.epoch != feed.epoch:
                continue  # taken before a rebalance: read again from the committed offsets
            fetched = by_partition(batch.runs)
            try:
                await handle(fetched)
            except Exception:  # (a cancellation is a stop: the next owner starts from the commit)
                consumer.read_again({tp: records[0].offset for tp, records in fetched.items()})
                raise
            for tp, records in fetched.items():
                consumer.ack_offsets(tp, [record.offset for record in records])


async def send_rejection(pipeline: Pipeline, event: Any, reason: str) -> None:
    """Route one bad record to pipeline.rejected, in its source's transaction; go on."""
    message = event.message
    value = rejection(
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        key=message.key,
        value=message.value,
        reason=reason,
        now=time.time(),
    )
    # Durable before the record is acknowledged: a rejected record is never simply gone.
    await (await emit(pipeline.app, event, pipeline.topics.rejected, message.key, value))
    REJECTED.labels(topic=message.topic).inc()
    log.info(
        "rejected record topic=%s partition=%s offset=%s reason=%s",
        message.topic,
        message.partition,
        message.offset,
        reason,
    )


async def decode_batch(
    pipeline: Pipeline, events: Iterable[Any], decode: Callable[[bytes | None], T]
) -> dict[int, list[tuple[Any, T]]]:
    """Decode a batch, rejecting bad records; the good ones grouped by source partition."""
    by_partition: dict[int, list[tuple[Any, T]]] = defaultdict(list)
    for event in events:
        try:
            value = decode(event.value)
        except InvalidRecord as exc:
            await send_rejection(pipeline, event, exc.reason)
            continue
        by_partition[event.message.partition].append((event, value))
    return by_partition


async def decode_records(
    pipeline: Pipeline, tp: TP, records: Iterable[Any], decode: Callable[[bytes | None], T]
) -> list[T]:
    """Decode fetched records of partition ``tp`` (of a bulk feed), rejecting bad ones."""
    decoded: list[T] = []
    for record in records:
        try:
            decoded.append(decode(record.value))
        except InvalidRecord as exc:
            await send_rejection(pipeline, SourceEvent.of(tp, record), exc.reason)
    return decoded


async def decode_keyed(
    pipeline: Pipeline,
    events: Iterable[Any],
    decode: Callable[[bytes | None], T],
    *,
    key_name: str,
) -> list[tuple[Any, str, T]]:
    """Decode records whose record key names their subject; reject keyless or bad ones."""
    decoded: list[tuple[Any, str, T]] = []
    for event in events:
        subject = event.key.decode(errors="replace") if event.key else ""
        try:
            if not subject:
                raise InvalidRecord(f"the record key must be the {key_name}")
            decoded.append((event, subject, decode(event.value)))
        except InvalidRecord as exc:
            await send_rejection(pipeline, event, exc.reason)
    return decoded


class ConcurrentHandlers:
    """Each event handled in a task of its own, at most ``limit`` at a time, and acknowledged
    (in its partition's order) once its handler returns."""

    def __init__(
        self,
        limit: int,
        handle: Callable[[Any], Awaitable[None]],
        acks: OrderedAcks,
        *,
        finished: Callable[[], None] | None = None,
    ) -> None:
        self._slots = asyncio.Semaphore(limit)
        self._handle = handle
        self._acks = acks
        self._finished = finished
        self._running: set[asyncio.Task[None]] = set()

    async def slot(self) -> None:
        """Wait for room for one more event; then :meth:`start` it or :meth:`give_back`."""
        await self._slots.acquire()

    def give_back(self) -> None:
        self._slots.release()

    def start(self, event: Any) -> None:
        self._acks.arrived(event)
        task = asyncio.create_task(self._guarded(event))
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    def cancel(self) -> None:
        for task in self._running:
            task.cancel()

    async def _guarded(self, event: Any) -> None:
        try:
            await self._handle(event)
            await self._acks.finished(event)
        except Exception:  # one event's bug must not stop the others; its offset stays put
            log.exception("delivery handler failed")
        finally:
            self._slots.release()
            if self._finished is not None:
                self._finished()


async def run_bounded(
    events: AsyncIterator[Any],
    limit: int,
    handle: Callable[[Any], Awaitable[None]],
    acks: OrderedAcks,
) -> None:
    """Handle each event of a faust stream concurrently (see :class:`ConcurrentHandlers`)."""
    handlers = ConcurrentHandlers(limit, handle, acks)
    try:
        async for event in events:
            await handlers.slot()
            handlers.start(event)
    finally:
        handlers.cancel()


async def handle_each(
    feed: BulkFeed,
    consumer: Any,
    handle: Callable[[Any], Awaitable[None]],
    *,
    limit: int,
    max_records: int,
    due: Callable[[bytes | None], float] | None = None,
) -> None:
    """Handle each record of a bulk feed concurrently, as :func:`run_bounded` does a stream's
    events, and acknowledge it through faust's bookkeeping (in its partition's order).

    Records being handled are counted in ``feed.in_flight``, which rebalances and stops wait
    for. Records taken before a rebalance and not started are dropped, as faust drops its
    stream queues: the partitions are read again from their committed offsets.

    With ``due`` (unix seconds of a record's value), each record starts no earlier than then:
    a retry tier's jobs arrive in (nearly) due order, so waiting for each in turn is cheap.
    """

    async def ack(event: Any) -> None:
        consumer.ack_offsets(event.message.tp, (event.message.offset,))

    handlers = ConcurrentHandlers(limit, handle, OrderedAcks(ack), finished=feed.in_flight.done)
    try:
        while True:
            batch = await feed.take(max_records, within=0)
            for event in source_events(batch.runs):
                wait = 0.0 if due is None else due(event.value) - time.time()
                # The job's own due time, not synchronisation; a rebalance ends the wait.
                if wait > 0 and await feed.cleared_within(wait, batch.epoch):
                    break
                await handlers.slot()
                if batch.epoch != feed.epoch:
                    handlers.give_back()
                    break
                feed.in_flight.add()  # before any await: a rebalance now waits for it
                handlers.start(event)
    finally:
        handlers.cancel()
