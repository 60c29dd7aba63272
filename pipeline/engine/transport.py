"""The faust transport of quota-pipeline, registered with faust as ``quota-pipeline`` (broker
URLs ``quota-pipeline://host:port``) through its ``faust.transports`` entry point: faust's
aiokafka transport with our consumer (:class:`GatedConsumer`), a producer that can wait for
every buffered write (:func:`pipeline.engine.transactions.drainable`) and a transaction manager
that stops the producers of revoked partitions.

The objects a consumer needs from its App (the commit gate, the bulk feeds) are kept per App
in :func:`hooks_of`, since faust builds the consumer itself, from the class.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from weakref import WeakKeyDictionary

from aiokafka.errors import KafkaError
from faust.transport.drivers import aiokafka as aiokafka_driver
from faust.types import TP

from pipeline.engine.consumer import LosslessFetchConsumer
from pipeline.engine.feeds import BulkFeed
from pipeline.engine.gate import BatchGate
from pipeline.engine.transactions import DRAIN_TIMEOUT, RevokingTransactionManager, drainable

log = logging.getLogger(__name__)

#: The scheme of broker URLs that selects this transport (the entry point's name).
SCHEME = "quota-pipeline"


@dataclass
class Hooks:
    """What the consumer of one App reads from it."""

    gate: BatchGate = field(default_factory=BatchGate)
    #: Topic name -> the feed its records go to, instead of faust's streams.
    feeds: dict[str, BulkFeed] = field(default_factory=dict)


_HOOKS: WeakKeyDictionary[Any, Hooks] = WeakKeyDictionary()


def hooks_of(app: Any) -> Hooks:
    """The hooks of ``app``, made on first use."""
    hooks = _HOOKS.get(app)
    if hooks is None:
        hooks = _HOOKS[app] = Hooks()
    return hooks


class GatedConsumer(LosslessFetchConsumer):
    """faust's consumer that commits only through the App's gate (see
    pipeline.engine.transactions), hands the records of bulk topics to their feeds, and
    recovers tables a fetch at a time (pipeline.engine.recovery)."""

    bulk_recovery = True

    @property
    def bulk_feeds(self) -> Mapping[str, BulkFeed]:  # type: ignore[override]
        return hooks_of(self.app).feeds

    def key_partition(
        self, topic: str, key: bytes | None, partition: int | None = None
    ) -> int | None:
        # faust answers None for a topic missing from the consumer's metadata (changelogs
        # are), and then sends outside the transaction. A given partition needs no lookup.
        if partition is not None:
            return partition
        return super().key_partition(topic, key, partition)

    async def highwaters(self, *partitions: TP) -> Mapping[TP, int]:
        if not self.in_transaction:
            return await super().highwaters(*partitions)
        # Under exactly_once faust answers with the last stable offset aiokafka remembers
        # from its last fetch of the partition: None, read as "empty", for one not fetched
        # since it was assigned. Recovery then skipped that changelog, or crashed with
        # ConsistencyError when a partition moved in from a stopped worker. A
        # read_committed consumer's ListOffsets asks the broker for it instead.
        return await self.end_offsets(partitions)

    #: False from a commit that ended the transactions (faust's wait_empty, at a
    #: rebalance or a stop) until the next assignment begins new ones.
    transactions_open = True

    async def on_partitions_revoked(self, revoked: set[TP]) -> None:
        # faust forgets the acknowledgements of revoked partitions *before* its handler
        # commits; their batches' output stayed in the open transaction, committed later
        # with other offsets, and the batches were processed again after the rebalance:
        # triggers twice, org partials twice (at-least-once repeated them as well). So
        # commit first; faust forgets them before any other task runs, and what is acked
        # after that is committed by its handler.
        await self.commit()
        await super().on_partitions_revoked(revoked)

    async def on_partitions_assigned(self, *args: Any, **kwargs: Any) -> None:
        await super().on_partitions_assigned(*args, **kwargs)
        self.transactions_open = True
        hooks_of(self.app).gate.release()

    async def commit(self, *args: Any, **kwargs: Any) -> bool:
        ends_transactions = not kwargs.get("start_new_transaction", True)
        if self.in_transaction and not self.transactions_open:
            # A timer's commit after the transactions ended would find none to put its
            # offsets in, and crash the consumer; the next assignment commits them.
            return False
        if self.should_stop and not ends_transactions:
            return False
        if ends_transactions:
            self.transactions_open = False
        async with hooks_of(self.app).gate.commit():
            # Table writes are buffered by faust; they belong with the offsets about to be
            # committed (in their transactions, under exactly_once), so they go first.
            try:
                async with asyncio.timeout(DRAIN_TIMEOUT):
                    await self.app.producer.drain()  # type: ignore[attr-defined]
            except TimeoutError:
                # Committing now could put offsets ahead of state; the next commit retries.
                log.warning("table writes unacknowledged after %ss: commit put off", DRAIN_TIMEOUT)
                return False
            committed: bool = await super().commit(*args, **kwargs)
            if ends_transactions and self.in_transaction:
                # Output of a batch from now on would belong to no transaction.
                hooks_of(self.app).gate.hold()
            return committed


#: How long a worker keeps trying to create an internal topic while brokers are unwell.
TOPIC_CREATE_PATIENCE = 120.0


class Transport(aiokafka_driver.Transport):
    """faust's aiokafka transport with our consumer, producer and transaction manager."""

    Consumer = GatedConsumer
    Producer = drainable(aiokafka_driver.Producer)
    TransactionManager = RevokingTransactionManager

    async def _create_topic(
        self, owner: Any, client: Any, topic: str, *args: Any, **kwargs: Any
    ) -> None:
        # faust asks the first broker of its metadata for the controller and sends the
        # request once: a worker that started while that broker was down (one node of three
        # killed) crashed with NodeNotReadyError. The cluster drops a dead broker from its
        # metadata within its session timeout, so ask again with fresh metadata until then.
        deadline = asyncio.get_running_loop().time() + TOPIC_CREATE_PATIENCE
        while True:
            try:
                await super()._create_topic(owner, client, topic, *args, **kwargs)
            except KafkaError as exc:
                if not exc.retriable or asyncio.get_running_loop().time() > deadline:
                    raise
                log.warning("creating topic %s: %s; trying again", topic, type(exc).__name__)
                await asyncio.sleep(1)  # back off: the cluster is electing or fencing
                await client.force_metadata_update()
            else:
                return
