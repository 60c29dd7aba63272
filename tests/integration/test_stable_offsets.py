"""Committed offsets read as they stand once no transaction holds them pending
(pipeline.engine.stable_offsets), against the real broker: what the ingest relay's new owner
of a partition starts from."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from pipeline.engine.stable_offsets import Unstable, _fetch, stable_committed


@pytest.fixture
async def group_and_topic(
    kafka_bootstrap: str,
) -> AsyncIterator[tuple[AIOKafkaConsumer, TopicPartition]]:
    name = f"stable-{uuid.uuid4().hex[:8]}"
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka_bootstrap, group_id=f"{name}-group")
    await consumer.start()
    yield consumer, TopicPartition(name, 0)
    await consumer.stop()


async def test_offsets_a_transaction_holds_read_unstable_until_it_commits(
    kafka_bootstrap: str, group_and_topic: tuple[AIOKafkaConsumer, TopicPartition]
) -> None:
    consumer, tp = group_and_topic
    producer = AIOKafkaProducer(
        bootstrap_servers=kafka_bootstrap, transactional_id=f"{tp.topic}-tx", acks="all"
    )
    await producer.start()
    try:
        assert await stable_committed(consumer, [tp]) == {tp: None}
        await producer.begin_transaction()
        await producer.send_and_wait(tp.topic, b"output", partition=0)
        await producer.send_offsets_to_transaction({tp: 7}, consumer._group_id)
        # Pending: aiokafka's own read answers as before the transaction; the stable read
        # refuses to answer at all.
        assert await consumer.committed(tp) is None
        with pytest.raises(Unstable):
            await _fetch(consumer, [tp])
        await producer.commit_transaction()
        assert await stable_committed(consumer, [tp]) == {tp: 7}

        await producer.begin_transaction()
        await producer.send_offsets_to_transaction({tp: 9}, consumer._group_id)
        await producer.abort_transaction()
        assert await stable_committed(consumer, [tp]) == {tp: 7}
    finally:
        await producer.stop()


async def test_partitions_never_committed_read_as_none(
    group_and_topic: tuple[AIOKafkaConsumer, TopicPartition],
) -> None:
    consumer, tp = group_and_topic
    other = TopicPartition(tp.topic, 3)
    assert await stable_committed(consumer, [tp, other]) == {tp: None, other: None}
    assert await stable_committed(consumer, []) == {}
