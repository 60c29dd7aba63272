"""Record batches sent on a real broker (pipeline.engine.transactions.emit_batched): every record,
in order, and the offset of the last, whatever the number of batches they take."""

from __future__ import annotations

import uuid
from types import SimpleNamespace

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from pipeline.engine.transactions import emit_all, emit_batched
from tests.integration.conftest import key_partition, read_to_end


async def new_topic(bootstrap: str, name: str, partitions: int) -> str:
    topic = f"{name}-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, partitions, 1)])
    finally:
        await admin.close()
    return topic


def app_over(producer: AIOKafkaProducer) -> SimpleNamespace:
    """Under at_least_once faust's producer hands out its one aiokafka producer."""
    return SimpleNamespace(
        in_transaction=False, producer=SimpleNamespace(_ensure_producer=lambda: producer)
    )


async def test_records_beyond_one_batch_all_arrive_in_order_with_the_last_offset_returned(
    kafka_bootstrap,
):
    topic = await new_topic(kafka_bootstrap, "batched", 2)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks=-1)
    await producer.start()
    try:
        app = app_over(producer)
        await producer.send_and_wait(topic, b"already there", partition=1)
        # About 120 KB: the producer's record batches hold 16 KB.
        records = [(f"key-{i}".encode(), f"{i:04d}".encode() * 25) for i in range(1_000)]

        last = await emit_batched(app, None, topic, 1, records)
    finally:
        await producer.stop()

    on_partition = await read_to_end(kafka_bootstrap, topic)
    assert {record.partition for record in on_partition} == {1}
    assert [(record.key, record.value) for record in on_partition[1:]] == records
    assert last == on_partition[-1].offset == 1_000


async def test_emitted_records_go_to_their_keys_partitions_in_order(kafka_bootstrap):
    topic = await new_topic(kafka_bootstrap, "emitted", 3)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks=-1)
    await producer.start()
    try:
        app = app_over(producer)
        records = [(f"key-{i % 7}".encode(), f"{i}".encode()) for i in range(200)]

        await emit_all(app, None, SimpleNamespace(get_topic_name=lambda: topic), records)
    finally:
        await producer.stop()

    emitted = await read_to_end(kafka_bootstrap, topic)
    for record in emitted:  # where a keyed send puts it
        assert record.partition == key_partition(record.key.decode(), 3)
    assert len({record.partition for record in emitted}) > 1
    by_key: dict[bytes, list[bytes]] = {}
    for record in emitted:
        by_key.setdefault(record.key, []).append(record.value)
    assert by_key == {
        key: [value for k, value in records if k == key] for key in {k for k, _ in records}
    }
