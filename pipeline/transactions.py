"""Exactly-once processing on top of faust's transactions.

faust (``processing_guarantee="exactly_once"``) keeps one Kafka transaction per source
partition and commits a partition's offsets in it. Two gaps remain, and this module closes them:

1. faust sends a table's changelog writes outside the transaction when the changelog topic is
   not in its consumer's metadata, which it usually is not: a crash then keeps table changes
   whose offsets never committed. :func:`install_gate`'s consumer resolves the (already known)
   partition itself, so they go into the transaction.
2. faust commits on a timer that runs beside the agents, so a commit could land in the middle of
   a batch: part of the batch's output committed, its offsets not, and after a crash the batch is
   processed again. :class:`BatchGate` makes batches and commits exclusive: a commit waits until
   no batch is in flight (and holds new ones back), flushes the table writes buffered by faust,
   then computes and commits offsets. A batch is acknowledged before it leaves the gate, so its
   offsets always commit with its output.
3. faust picks the transaction of each send from the send's *destination* partition, right only
   for co-partitioned output. :func:`emit` sends into the transaction of the *source* partition
   of the batch, so org partials and org triggers (keyed by org id) commit atomically with the
   offsets they came from.

Under ``at_least_once`` the gate still orders commits after whole batches, and :func:`emit` is a
plain send. Local RocksDB state is not transactional at all: see worker.discard_state_after_crash.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from typing import Any

import faust

from pipeline.fetching import LosslessFetchConsumer


class BatchGate:
    """Many batches at once, or one commit; never both."""

    def __init__(self) -> None:
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._open = asyncio.Event()
        self._open.set()
        self._committing = asyncio.Lock()

    @asynccontextmanager
    async def batch(self) -> AsyncIterator[None]:
        """Held while one batch is processed and acknowledged."""
        # Re-check after waking: a commit may have closed the gate again before we ran, and
        # nothing may await between this check and the count going up.
        while not self._open.is_set():
            await self._open.wait()
        self._in_flight += 1
        self._idle.clear()
        try:
            yield
        finally:
            self._in_flight -= 1
            if self._in_flight == 0:
                self._idle.set()

    @asynccontextmanager
    async def commit(self) -> AsyncIterator[None]:
        """Held while offsets are computed and committed; waits for in-flight batches."""
        async with self._committing:
            self._open.clear()
            try:
                await self._idle.wait()
                yield
            finally:
                self._open.set()


def install_gate(app: faust.App, gate: BatchGate) -> None:
    """Make the App's consumer commit only through ``gate`` (call before the App starts)."""

    class GatedConsumer(LosslessFetchConsumer):
        def key_partition(
            self, topic: str, key: bytes | None, partition: int | None = None
        ) -> int | None:
            # faust answers None for a topic missing from the consumer's metadata (changelogs
            # are), and then sends outside the transaction. A given partition needs no lookup.
            if partition is not None:
                return partition
            return super().key_partition(topic, key, partition)

        async def commit(self, *args: Any, **kwargs: Any) -> bool:
            if self.should_stop and kwargs.get("start_new_transaction", True):
                # Stopping: the final commit (which ends the transactions) is the one that
                # counts; a timer's commit after it would find no transaction to commit.
                return False
            async with gate.commit():
                if self.app.in_transaction:
                    # Table writes are buffered by faust; they belong to the transactions that
                    # are about to commit, so publish them first.
                    await self.app.producer.flush()
                return await super().commit(*args, **kwargs)

    # The transport builds its consumer from this attribute when the App starts.
    app.transport.Consumer = GatedConsumer  # type: ignore[misc]


async def emit(
    app: faust.App, source_event: Any, topic: faust.TopicT, key: bytes, value: bytes
) -> Awaitable[Any]:
    """Send ``value`` to ``topic`` in the transaction of ``source_event``'s partition; returns
    the broker's acknowledgement to await."""
    if not app.in_transaction:
        return await topic.send(key=key, value=value)
    source = source_event.message.tp
    name = topic.get_topic_name()
    transactions = app.consumer.transactions
    group = app.assignor.group_for_topic(source.topic)
    return await transactions.producer.send(
        name,
        key,
        value,
        app.consumer.key_partition(name, key, None),
        None,
        None,
        transactional_id=f"{app.conf.id}-{group}-{source.partition}",
    )


async def emit_all(
    app: faust.App, source_event: Any, topic: faust.TopicT, records: list[tuple[bytes, bytes]]
) -> None:
    """Send every (key, value) and wait until the broker has them all."""
    acks = [await emit(app, source_event, topic, key, value) for key, value in records]
    await asyncio.gather(*acks)
