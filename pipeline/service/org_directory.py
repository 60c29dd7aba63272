"""Every org's event_options, in every worker: where an org's events go.

Each worker reads the whole of quota.orgs (compacted) with a consumer of its own, outside the
consumer group, into memory. faust's GlobalTable was meant for this, but with more than one
worker some of them miss updates (faust issues 283, 475 and 751; our two-worker test saw it),
and a trigger delivered by such a worker would skip its org's webhook and email.

Orgs are few and small, so memory is no concern; the delivery agents wait for :attr:`ready`
(the topic read to its end as of start-up) before their first event, so an org published before
a worker starts is always known to it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from pipeline.config import Settings
from pipeline.errors import InvalidRecord
from pipeline.records.subjects import decode_org
from pipeline.usage.watching import compact_org

log = logging.getLogger(__name__)


class OrgDirectory:
    """org id -> its event_options, kept current from quota.orgs."""

    def __init__(self) -> None:
        self._options: dict[str, dict[str, Any]] = {}
        self.ready = asyncio.Event()

    def get(self, org_id: str) -> Mapping[str, Any] | None:
        return self._options.get(org_id)

    def apply(self, key: bytes | None, value: bytes | None) -> None:
        """One quota.orgs record: an org, or a tombstone. An invalid org keeps the previous
        one (the orgs agent reports it to pipeline.rejected)."""
        if not key:
            return
        org_id = key.decode(errors="replace")
        try:
            org = decode_org(value)
        except InvalidRecord:
            return
        if org is None:
            self._options.pop(org_id, None)
        else:
            self._options[org_id] = compact_org(org)["event_options"]

    async def follow(self, settings: Settings) -> None:
        """Read quota.orgs from the beginning, for as long as the worker runs."""
        consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.kafka.bootstrap_servers,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        await consumer.start()
        try:
            tps = await partitions_of(consumer, settings.topics.orgs)
            while not tps:
                self.ready.set()  # no topic yet, so no org to know: nothing to wait for
                await asyncio.sleep(1)  # until `topics create` makes it
                tps = await partitions_of(consumer, settings.topics.orgs)
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            ends = await consumer.end_offsets(tps)
            while True:
                if not self.ready.is_set() and await caught_up(consumer, ends):
                    log.info("org directory ready: %d orgs", len(self._options))
                    self.ready.set()
                batch = await consumer.getmany(timeout_ms=500)
                for records in batch.values():
                    for record in records:
                        self.apply(record.key, record.value)
        finally:
            await consumer.stop()


async def caught_up(consumer: AIOKafkaConsumer, ends: Mapping[TopicPartition, int]) -> bool:
    """Whether every partition is read up to its end offset as of start-up."""
    for tp, end in ends.items():
        if await consumer.position(tp) < end:
            return False
    return True


async def partitions_of(consumer: AIOKafkaConsumer, topic: str) -> list[TopicPartition]:
    # A consumer outside a group learns only the topics it is told of; ask the cluster.
    metadata = await consumer._client.fetch_all_metadata()
    return [TopicPartition(topic, p) for p in sorted(metadata.partitions_for_topic(topic) or ())]
