"""Exactly-once processing on top of faust's transactions.

faust (``processing_guarantee="exactly_once"``) keeps one Kafka transaction per source
partition and commits a partition's offsets in it. These gaps remain, and this module closes them:

1. faust sends a table's changelog writes outside the transaction when the changelog topic is
   not in its consumer's metadata, which it usually is not: a crash then keeps table changes
   whose offsets never committed. The consumer (pipeline.engine.transport.GatedConsumer)
   resolves the (already known) partition itself, so they go into the transaction.
2. faust commits on a timer that runs beside the agents, so a commit could land in the middle of
   a batch: part of the batch's output committed, its offsets not, and after a crash the batch is
   processed again. The BatchGate (pipeline.engine.gate) makes batches and commits exclusive: a
   commit waits until no batch is in flight (and holds new ones back) and for the table writes
   buffered by faust (3), then computes and commits offsets. A batch is acknowledged before it
   leaves the gate, so its offsets always commit with its output.
3. faust buffers table writes and its flush gives up after 0.1 s without progress, and never
   waits for the message its sender task holds: a commit could then carry a batch's offsets
   while the batch's table writes went into the next transaction (and were lost with a crash
   before it committed). :func:`drainable` makes the producer track every buffered write, and
   the gate waits for all of them before it commits, under either guarantee. The usage tables
   skip that buffer: their batches write them in bulk (:func:`emit_batched`, through
   ``pipeline.engine.tables.write_all``) and wait for the broker before they end.
4. Under exactly_once faust takes a changelog's end from the last fetch of it, and has none
   for a partition not fetched since it was assigned: see ``GatedConsumer.highwaters``.
5. faust picks the transaction of each send from the send's *destination* partition, right only
   for co-partitioned output. :func:`emit` sends into the transaction of the *source* partition
   of the batch, so org partials and org triggers (keyed by org id) commit atomically with the
   offsets they came from.
6. faust ends the transactions at every rebalance and stop (``wait_empty``) and begins new ones
   only at the next assignment, while its commit timer keeps running: a timer commit in between
   crashed the consumer ("Not in the middle of a transaction") and left the transactions open,
   and the worker taking over then found its producers fenced. The gate's commit does nothing
   in that window, and the gate keeps batches out of it: their output would belong to no
   transaction.
7. faust stops the transactional producer of a revoked partition only when the partition does
   not stay on the worker as a standby. One that did kept its producer; the partition's new
   owner then fenced it, and when the partition came back the fenced producer was reused:
   every send failed with ProducerFenced. :class:`RevokingTransactionManager` stops them all.
8. At a rebalance faust forgets the acknowledgements of revoked partitions before it commits.
   Batches acknowledged since the last commit then had their output committed later (in the
   transaction that stayed open) and were processed again: triggers and org partials twice.
   The consumer commits first (``GatedConsumer.on_partitions_revoked``).

Under ``at_least_once`` the gate still orders commits after whole batches, and :func:`emit` is a
plain send. Local RocksDB state is not transactional at all: see
``pipeline.service.worker.discard_state_after_crash``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Iterable, Sequence
from contextlib import nullcontext
from typing import Any, cast

import faust
from faust.exceptions import ProducerSendError
from faust.transport.consumer import TopicPartitionGroup, TransactionManager
from faust.types import TP

from pipeline.engine.batches import KeyPartitions, RecordBatches

log = logging.getLogger(__name__)

#: How long a commit waits for the table writes before it; then it is put off to the next one.
DRAIN_TIMEOUT = 30.0


def drainable(producer_class: type) -> type:
    """``producer_class`` that can wait until every message of ``send_soon`` is acknowledged.

    Table writes go through ``send_soon``. faust's own ``flush`` is not enough before a commit:
    it returns after 0.1 s without progress and does not count the message in its sender's
    hands, so a write could slip into the next transaction.
    """

    class DrainableProducer(producer_class):  # type: ignore[misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.unacknowledged: set[asyncio.Future[Any]] = set()

        def send_soon(self, fut: asyncio.Future[Any]) -> None:
            self.unacknowledged.add(fut)
            fut.add_done_callback(self.unacknowledged.discard)
            super().send_soon(fut)

        async def drain(self) -> None:
            """Return once every message given to ``send_soon`` so far is acknowledged."""
            while self.unacknowledged:
                # Failures are the sender's to report; the wait is only for them to settle.
                await asyncio.wait(list(self.unacknowledged))

    return DrainableProducer


def transactional_ids(manager: Any, tps: Iterable[TP]) -> set[str]:
    """The transactional ids of ``tps``, standbys included (faust's own lookup skips them)."""
    assignor = manager.app.assignor
    return {
        manager.transactional_id_format.format(
            tpg=TopicPartitionGroup(tp.topic, tp.partition, assignor.group_for_topic(tp.topic)),
            group_id=manager.app.conf.id,
        )
        for tp in tps
    }


class RevokingTransactionManager(TransactionManager):
    """faust's transaction manager, stopping the producer of every revoked partition."""

    async def on_rebalance(
        self, assigned: set[TP], revoked: set[TP], newly_assigned: set[TP]
    ) -> None:
        kept_as_standby = {tp for tp in revoked if self.app.assignor.is_standby(tp)}
        stale = transactional_ids(self, kept_as_standby) - transactional_ids(self, assigned)
        for transactional_id in sorted(stale):
            await self.producer.stop_transaction(transactional_id)
        await super().on_rebalance(assigned, revoked, newly_assigned)


def transactional_id_of(app: faust.App, source_event: Any) -> str:
    """The id of the transaction that ``source_event``'s partition commits its offsets in,
    made with faust's own format (``TransactionManager.transactional_id_format``)."""
    [transactional_id] = transactional_ids(app.consumer.transactions, [source_event.message.tp])
    return transactional_id


async def emit(
    app: faust.App, source_event: Any, topic: faust.TopicT, key: bytes | None, value: bytes
) -> Awaitable[Any]:
    """Send ``value`` to ``topic`` in the transaction of ``source_event``'s partition; returns
    the broker's acknowledgement to await."""
    if not app.in_transaction:
        return await topic.send(key=key, value=value)
    name = topic.get_topic_name()
    return await app.consumer.transactions.producer.send(
        name,
        key,
        value,
        app.consumer.key_partition(name, key, None),
        None,
        None,
        transactional_id=transactional_id_of(app, source_event),
    )


def producer_of(app: faust.App, source_event: Any) -> tuple[Any, Any]:
    """The aiokafka producer that sends in ``source_event``'s transaction (faust's one producer
    outside exactly_once), and the lock a batch must hold so that no commit lands inside it."""
    # faust's Producer hands out neither its aiokafka producers nor batches: this is the one
    # place (beside engine.web.route_to_owner) that reaches under it.
    faust_producer = cast(Any, app.producer)
    if not app.in_transaction:
        return faust_producer._ensure_producer(), nullcontext()
    transactional_id = transactional_id_of(app, source_event)
    producer = faust_producer._transaction_producers.get(transactional_id)
    if producer is None:  # fenced and stopped: as faust's own send fails then
        raise ProducerSendError(f"No transaction producer for {transactional_id}")
    # faust commits a transaction under this lock; a batch must not land in the middle.
    return producer, faust_producer._trn_locks[transactional_id]


async def emit_batched(
    app: faust.App,
    source_event: Any,
    topic: str,
    partition: int,
    records: Sequence[tuple[bytes, bytes | None]],
) -> int:
    """Send ``records`` to one partition of ``topic`` as record batches, in the transaction of
    ``source_event``'s partition; return the offset of the last once the broker has them all.

    One record at a time through faust costs 30 µs or more (its send buffer, a future and a
    callback each): see :class:`pipeline.engine.clients.RecordBatches`.
    """
    assert records, "nothing to send"
    producer, exclusive = producer_of(app, source_event)
    batches = RecordBatches(producer, topic, partition)
    async with exclusive:
        for key, value in records:
            await batches.add(key, value)
        acks = await batches.close()
    first_of_last = (await asyncio.gather(*acks))[-1].offset
    return int(first_of_last) + batches.in_last - 1


async def emit_all(
    app: faust.App, source_event: Any, topic: faust.TopicT, records: list[tuple[bytes, bytes]]
) -> None:
    """Send every (key, value) to its key's partition, in order, as record batches (see
    :func:`emit_batched`), and wait until the broker has them all.

    One at a time through faust, a worker delivering the webhooks of 870 crossings/s spent 5%
    of its time sending their triggers."""
    if not records:
        return
    name = topic.get_topic_name()
    producer, _ = producer_of(app, source_event)
    # Where a keyed send puts each (aiokafka's default partitioner, as faust's sends did).
    partition_of = KeyPartitions(sorted(await producer.partitions_for(name)))
    by_partition: dict[int, list[tuple[bytes, bytes | None]]] = {}
    for key, value in records:
        by_partition.setdefault(partition_of(key), []).append((key, value))
    await asyncio.gather(
        *(
            emit_batched(app, source_event, name, partition, batch)
            for partition, batch in by_partition.items()
        )
    )
