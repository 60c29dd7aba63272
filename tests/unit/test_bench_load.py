"""pipeline.bench_usage.load_batches: the usage load in record batches before its clock starts."""

from __future__ import annotations

from aiokafka import AIOKafkaProducer
from aiokafka.record.default_records import DefaultRecordBatch

from pipeline.bench_usage import load_batches


async def test_each_partition_keeps_its_records_in_order_and_the_partitions_take_turns() -> None:
    # Never started: filling batches needs no broker.
    producer = AIOKafkaProducer(bootstrap_servers="127.0.0.1:9", max_batch_size=1024)
    records = [(i % 3, f"key-{i}".encode(), f"{i:04d}".encode() * 10) for i in range(300)]

    try:
        batches = load_batches(producer, records)
    finally:
        await producer.stop()

    read: dict[int, list[tuple[bytes | None, bytes | None]]] = {0: [], 1: [], 2: []}
    for partition, batch in batches:
        read[partition] += [(r.key, r.value) for r in DefaultRecordBatch(bytes(batch._build()))]
    assert read == {p: [(k, v) for q, k, v in records if q == p] for p in range(3)}
    assert len(batches) > 3
    # Every partition fills at once: the first batches are one of each.
    assert sorted(partition for partition, _ in batches[:3]) == [0, 1, 2]
