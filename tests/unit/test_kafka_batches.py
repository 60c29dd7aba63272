"""pipeline.kafka.filled_batches: records appended in order to as many batches as they take."""

from __future__ import annotations

from aiokafka import AIOKafkaProducer
from aiokafka.record.default_records import DefaultRecordBatch

from pipeline.kafka import filled_batches


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
