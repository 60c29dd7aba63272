"""pipeline.engine.batches: records appended in order to as many record batches as they
take, per partition."""

from __future__ import annotations

from aiokafka import AIOKafkaProducer
from aiokafka.record.memory_records import MemoryRecords

from pipeline.engine.batches import filled_batches, partitioned_batches


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
    read = [record for batch in batches for record in records_in(batch)]
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
        read[partition] += records_in(batch)
    assert read == {p: [(k, v) for q, k, v in records if q == p] for p in range(3)}
    assert len(batches) > 3
    # Every partition fills at once: the first batches are one of each.
    assert sorted(partition for partition, _ in batches[:3]) == [0, 1, 2]


def records_in(batch: object) -> list[tuple[bytes | None, bytes | None]]:
    """(key, value) of each record in a built batch, whatever its record format: an unstarted
    producer writes the legacy format before aiokafka 0.14 and the v2 format from it."""
    records = MemoryRecords(bytes(batch._build()))  # type: ignore[attr-defined]
    found = []
    while records.has_next():
        found += [(record.key, record.value) for record in records.next_batch()]
    return found
