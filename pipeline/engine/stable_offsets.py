"""A consumer group's committed offsets as they stand once no transaction is pending on them
(Kafka's ``require_stable``, KIP-447), which aiokafka's ``committed()`` cannot ask for.

Why it matters: a transaction that commits offsets (``send_offsets_to_transaction``) ends in
two steps on the broker. The transaction coordinator writes its commit markers and completes;
the group coordinator then moves the transaction's offsets from pending to committed, a moment
later, on a thread of its own. An OffsetFetch without ``require_stable`` in that moment answers
the offset from before the transaction, and a relay that started from it would produce that
transaction's records a second time. With ``require_stable`` the broker answers
UNSTABLE_OFFSET_COMMIT (88) for a partition while its offsets are pending, and this module asks
again until they are not.

aiokafka speaks OffsetFetch up to v3; ``require_stable`` came in v7 (a flexible version), so the
request and response are declared here on aiokafka's own protocol types.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka import errors as kafka_errors
from aiokafka.client import ConnectionGroup
from aiokafka.protocol.api import Request, RequestStruct, Response, Schema
from aiokafka.protocol.types import (
    Boolean,
    CompactArray,
    CompactString,
    Int16,
    Int32,
    Int64,
    TaggedFields,
)

#: The broker's answer for a partition whose offsets a transaction still holds.
UNSTABLE_OFFSET_COMMIT = 88
#: Seconds between asks while offsets are pending (the group coordinator settles them in
#: milliseconds once the transaction has ended).
RETRY_EVERY = 0.02
#: Seconds before giving up: a transaction stays pending at most until it times out, and the
#: relay fences any that could (a caller that gives up starts again).
WAIT_AT_MOST = 60.0


class OffsetFetchResponse_v7(Response):  # type: ignore[misc]  # named as aiokafka's
    API_KEY = 9
    API_VERSION = 7
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        (
            "topics",
            CompactArray(
                ("name", CompactString("utf-8")),
                (
                    "partitions",
                    CompactArray(
                        ("partition_index", Int32),
                        ("committed_offset", Int64),
                        ("committed_leader_epoch", Int32),
                        ("metadata", CompactString("utf-8")),
                        ("error_code", Int16),
                        ("tags", TaggedFields),
                    ),
                ),
                ("tags", TaggedFields),
            ),
        ),
        ("error_code", Int16),
        ("tags", TaggedFields),
    )


class OffsetFetchRequest_v7(RequestStruct):  # type: ignore[misc]  # named as aiokafka's
    FLEXIBLE_VERSION = True
    API_KEY = 9
    API_VERSION = 7
    RESPONSE_TYPE = OffsetFetchResponse_v7
    SCHEMA = Schema(
        ("group_id", CompactString("utf-8")),
        (
            "topics",
            CompactArray(
                ("name", CompactString("utf-8")),
                ("partition_indexes", CompactArray(Int32)),
                ("tags", TaggedFields),
            ),
        ),
        ("require_stable", Boolean),
        ("tags", TaggedFields),
    )


class StableOffsetFetch(Request[OffsetFetchRequest_v7]):  # type: ignore[misc]
    API_KEY = 9

    def __init__(self, group_id: str, partitions: dict[str, list[int]]) -> None:
        self._group_id = group_id
        self._partitions = partitions

    def build(self, request_struct_class: type[OffsetFetchRequest_v7]) -> OffsetFetchRequest_v7:
        no_tags: dict[int, bytes] = {}
        topics = [(topic, indexes, no_tags) for topic, indexes in self._partitions.items()]
        return request_struct_class(self._group_id, topics, True, no_tags)


class Unstable(Exception):
    """Some partitions' offsets are still held by a transaction."""


async def stable_committed(
    consumer: AIOKafkaConsumer, partitions: Iterable[TopicPartition]
) -> dict[TopicPartition, int | None]:
    """Each partition's committed offset in ``consumer``'s group (None: nothing committed),
    once no transaction holds it pending. Raises a KafkaError when the broker refuses, and
    TimeoutError past WAIT_AT_MOST seconds."""
    wanted = sorted(set(partitions))
    if not wanted:
        return {}
    async with asyncio.timeout(WAIT_AT_MOST):
        while True:
            try:
                return await _fetch(consumer, wanted)
            except (Unstable, kafka_errors.GroupLoadInProgressError):
                pass
            except (kafka_errors.NotCoordinatorForGroupError, kafka_errors.NodeNotReadyError):
                consumer._coordinator.coordinator_dead()
            await asyncio.sleep(RETRY_EVERY)  # the broker tells no one when they settle


async def _fetch(
    consumer: AIOKafkaConsumer, wanted: list[TopicPartition]
) -> dict[TopicPartition, int | None]:
    coordinator = consumer._coordinator
    await coordinator.ensure_coordinator_known()
    by_topic: defaultdict[str, list[int]] = defaultdict(list)
    for tp in wanted:
        by_topic[tp.topic].append(tp.partition)
    response: Any = await consumer._client.send(
        coordinator.coordinator_id,
        StableOffsetFetch(coordinator.group_id, dict(by_topic)),
        group=ConnectionGroup.COORDINATION,
    )
    if response.error_code:
        raise kafka_errors.for_code(response.error_code)()
    offsets: dict[TopicPartition, int | None] = dict.fromkeys(wanted)
    for topic, topic_partitions, _ in response.topics:
        for partition, offset, _epoch, _metadata, error_code, _ in topic_partitions:
            if error_code == UNSTABLE_OFFSET_COMMIT:
                raise Unstable
            if error_code:
                raise kafka_errors.for_code(error_code)()
            offsets[TopicPartition(topic, partition)] = offset if offset >= 0 else None
    return offsets
