"""pipeline.fetching.rewind_uncommitted against the real broker: a partition with no committed
offset goes back to where a fresh assignment starts, as a committed one goes to its commit."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.structs import OffsetAndMetadata

from pipeline.fetching import rewind_uncommitted

RECORDS_PER_PARTITION = 3


@pytest.fixture
async def topic(kafka_bootstrap: str) -> str:
    """A two-partition topic with three records in each partition."""
    name = f"fetching-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, 2, 1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    await producer.start()
    try:
        for partition in (0, 1):
            for index in range(RECORDS_PER_PARTITION):
                await producer.send_and_wait(
                    name, f"{partition}-{index}".encode(), partition=partition
                )
    finally:
        await producer.stop()
    return name


async def read(consumer: AIOKafkaConsumer, count: int, timeout: float = 30) -> list[Any]:
    records: list[Any] = []
    deadline = time.monotonic() + timeout
    while len(records) < count:
        assert time.monotonic() < deadline, f"read {len(records)} of {count} records"
        for batch in (await consumer.getmany(timeout_ms=500)).values():
            records.extend(batch)
    return records


async def test_partitions_without_a_commit_are_read_again_after_the_seek(
    kafka_bootstrap: str, topic: str
) -> None:
    never_committed, committed_at_zero = TopicPartition(topic, 0), TopicPartition(topic, 1)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=kafka_bootstrap,
        group_id=f"fetching-{uuid.uuid4().hex[:8]}",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        consumer.assign([never_committed, committed_at_zero])
        await consumer.commit({committed_at_zero: OffsetAndMetadata(0, "")})
        first = await read(consumer, 2 * RECORDS_PER_PARTITION)

        committed = await consumer.seek_to_committed()
        assert committed == {never_committed: None, committed_at_zero: 0}
        # aiokafka's own seek leaves both where reading got to: what faust dropped stays lost.
        assert await consumer.position(never_committed) == RECORDS_PER_PARTITION
        assert await consumer.position(committed_at_zero) == RECORDS_PER_PARTITION

        rewound = await rewind_uncommitted(consumer, committed, "earliest")
        again = await read(consumer, 2 * RECORDS_PER_PARTITION)
    finally:
        await consumer.stop()
    assert set(rewound) == {never_committed, committed_at_zero}
    assert sorted((r.partition, r.offset) for r in again) == sorted(
        (r.partition, r.offset) for r in first
    )


async def test_a_partition_committed_past_zero_is_left_to_seek_to_committed(
    kafka_bootstrap: str, topic: str
) -> None:
    partition = TopicPartition(topic, 0)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=kafka_bootstrap,
        group_id=f"fetching-{uuid.uuid4().hex[:8]}",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        consumer.assign([partition])
        await consumer.commit({partition: OffsetAndMetadata(2, "")})
        committed = await consumer.seek_to_committed()
        rewound = await rewind_uncommitted(consumer, committed, "earliest")
        position = await consumer.position(partition)
    finally:
        await consumer.stop()
    assert rewound == []
    assert position == 2


async def test_latest_policy_starts_an_uncommitted_partition_at_its_end(
    kafka_bootstrap: str, topic: str
) -> None:
    partition = TopicPartition(topic, 0)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=kafka_bootstrap,
        group_id=f"fetching-{uuid.uuid4().hex[:8]}",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        consumer.assign([partition])
        committed = await consumer.seek_to_committed()
        await rewind_uncommitted(consumer, committed, "latest")
        position = await consumer.position(partition)
    finally:
        await consumer.stop()
    assert position == RECORDS_PER_PARTITION
