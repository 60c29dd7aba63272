"""pipeline.engine.batches: records appended in order to as many record batches as they
take, per partition."""

from __future__ import annotations

from aiokafka import AIOKafkaProducer
from aiokafka.record.default_records import DefaultRecordBatch

from pipeline.engine.clients import filled_batches, partitioned_batches


async def test_records_beyond_one_batch_fill_further_batches_in_order() -> None:
    # Never started: filling batches needs no broker.
    producer = AIOKafkaProducer(bootstrap_servers="127.0.0.1:9", max_batch_size=1024)
    records = [(f"key-{i}".encode(), f"{i:04d}".encode() * 10) for i in range(100)]

    try:
        batches = filled_batches(producer, records)
    finally:
        await producer.stop()

    assert len(batches) > 1
    assert sum(batch.record_count() for batch in batches) == len(records)
    read = [
        (record.key, record.value)
        for batch in batches
        for record in DefaultRecordBatch(bytes(batch._build()))
    ]
    assert read == records


async def test_each_partition_keeps_its_records_in_order_and_the_partitions_take_turns() -> None:
    # Never started: filling batches needs no broker.
    producer = AIOKafkaProducer(bootstrap_servers="127.0.0.1:9", max_batch_size=1024)
    records = [(i % 3, f"key-{i}".encode(), f"{i:04d}".encode() * 10) for i in range(300)]

    try:
        batches = partitioned_batches(producer, records)
    finally:
        await producer.stop()

    read: dict[int, list[tuple[bytes | None, bytes | None]]] = {0: [], 1: [], 2: []}
    for partition, batch in batches:
        read[partition] += [(r.key, r.value) for r in DefaultRecordBatch(bytes(batch._build()))]
    assert read == {p: [(k, v) for q, k, v in records if q == p] for p in range(3)}
    assert len(batches) > 3
    # Every partition fills at once: the first batches are one of each.
    assert sorted(partition for partition, _ in batches[:3]) == [0, 1, 2]
