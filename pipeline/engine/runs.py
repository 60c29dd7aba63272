"""How agents run over what they read: batches of a bulk feed under the commit gate, and events
handled concurrently within a bound, each acknowledged (or rejected) in its partition's order."""

from __future__ import annotations

import asyncio
import logging
import time
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from faust.types import TP

from pipeline.engine.acks import OrderedAcks
from pipeline.engine.feeds import Batch, BulkFeed, by_partition, source_events
from pipeline.engine.gate import BatchGate
from pipeline.errors import failure_reason

log = logging.getLogger(__name__)


async def process_runs(
    feed: BulkFeed,
    gate: BatchGate,
    consumer: Any,
    handle: Callable[[dict[TP, list[Any]]], Awaitable[None]],
    *,
    max_records: int,
    within: float,
    ready: Callable[[Batch], Awaitable[bool]] | None = None,
) -> None:
    """Hand batches of a bulk feed, per partition, to ``handle``, each under the commit gate
    (so that no commit lands inside one), and acknowledge each handled one.

    ``ready`` (if given) is awaited before each batch enters the gate; False drops the batch
    as stale (the feed was cleared meanwhile: its partitions are read again).

    A batch whose handler raises is not acknowledged, and its partitions are read again from
    its first records (``consumer.read_again``): later batches must not move the
    applied_offsets marks past records that were never applied.
    """
    while True:
        batch = await feed.take(max_records, within)
        if ready is not None and not await ready(batch):
            continue
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
                feed.handled(tp, records[-1].offset)


#: What a handler's failure does with the event it failed on: sends it to pipeline.rejected
#: with the reason (see :func:`send_rejection`).
Reject = Callable[[Any, str], Awaitable[None]]


def log_failure(event: Any, exc: BaseException) -> None:
    """Log a record's unexpected failure: where it came from, the error's type and where it
    was raised, never its message (it may quote the record: a key, an address)."""
    message = event.message
    log.error(
        "record could not be processed topic=%s partition=%s offset=%s error=%s\n%s",
        message.topic,
        message.partition,
        message.offset,
        type(exc).__name__,
        "".join(traceback.format_tb(exc.__traceback__)).rstrip(),
    )


class ConcurrentHandlers:
    """Each event handled in a task of its own, at most ``limit`` at a time, and acknowledged
    (in its partition's order) once its handler returns. An event whose handler fails is
    rejected (``reject``) and acknowledged: one bad event must never hold its partition back."""

    def __init__(
        self,
        limit: int,
        handle: Callable[[Any], Awaitable[None]],
        acks: OrderedAcks,
        *,
        reject: Reject,
        finished: Callable[[], None] | None = None,
    ) -> None:
        self._slots = asyncio.Semaphore(limit)
        self._handle = handle
        self._acks = acks
        self._reject = reject
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
            try:
                await self._handle(event)
            except Exception as exc:
                log_failure(event, exc)
                await self._reject(event, failure_reason(exc))
            await self._acks.finished(event)
        except Exception:  # not even rejected (the broker is gone): its offset stays put
            log.error("a failed record could not be rejected; it is read again after a restart")
        finally:
            self._slots.release()
            if self._finished is not None:
                self._finished()


async def run_bounded(
    events: AsyncIterator[Any],
    limit: int,
    handle: Callable[[Any], Awaitable[None]],
    acks: OrderedAcks,
    *,
    reject: Reject,
) -> None:
    """Handle each event of a faust stream concurrently (see :class:`ConcurrentHandlers`)."""
    handlers = ConcurrentHandlers(limit, handle, acks, reject=reject)
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
    reject: Reject,
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

    handlers = ConcurrentHandlers(
        limit, handle, OrderedAcks(ack), reject=reject, finished=feed.in_flight.done
    )
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
