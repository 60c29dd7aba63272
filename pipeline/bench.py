"""`quota-pipeline bench`: the usage stage's throughput beside the raw consume ceiling.

Both are measured in one run, on the same topic, against the broker at QP_KAFKA_BOOTSTRAP:

1. ceiling: a bare aiokafka consumer reading every record and decoding it with orjson;
2. usage stage: a worker process (the real one) consuming the same records, from the moment it
   is ready until its committed offsets reach the end, with a session for every key.

The run uses its own app id and topics, and deletes them when it ends.
"""

from __future__ import annotations

import asyncio
import random
import tempfile
import time
import uuid
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from rich.console import Console
from rich.table import Table

from pipeline.bench_delivery import DeliveryBench, run_delivery_bench, run_email_bench
from pipeline.config import Settings
from pipeline.demo import remove_topics
from pipeline.kafka import contract_topics, create_topics, probe_broker, wait_committed
from pipeline.loader import publish
from pipeline.local import WorkerProcess, isolated_config

T0 = 1_700_000_000.0


@dataclass(frozen=True)
class BenchResult:
    """What one bench run measured."""

    records: int
    keys: int
    orgs: int
    partitions: int
    produce_per_s: float
    ceiling_per_s: float
    usage_per_s: float
    deliveries: DeliveryBench | None = None
    emails_per_s: float | None = None

    @property
    def ratio(self) -> float:
        return self.usage_per_s / self.ceiling_per_s if self.ceiling_per_s else 0.0


async def produce_load(settings: Settings, records: int, keys: int, orgs: int) -> float:
    """Produce the request counts as fast as the client allows; returns records/s."""
    rng = random.Random(1)  # noqa: S311 - load generation, not cryptography
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka.bootstrap_servers, linger_ms=20, max_batch_size=262_144
    )
    await producer.start()
    started = time.perf_counter()
    try:
        pending = []
        for i in range(records):
            key = f"bench-key-{rng.randrange(keys)}"
            org = f"bench-org-{zlib.crc32(key.encode()) % orgs}"
            value = orjson.dumps({"ts": T0 + i / 1000, "org_id": org, "key": key})
            pending.append(await producer.send(settings.topics.requests, value, key=key.encode()))
            if len(pending) >= 10_000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return records / (time.perf_counter() - started)


async def ceiling(settings: Settings, records: int) -> float:
    """A bare consumer reading and decoding every record: the rate the pipeline is held to."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka.bootstrap_servers,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )
    await consumer.start()
    try:
        # Assigned, not subscribed: no group join inside the timed part.
        partitions = await consumer._client.fetch_all_metadata()
        tps = [
            TopicPartition(settings.topics.requests, p)
            for p in partitions.partitions_for_topic(settings.topics.requests) or ()
        ]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        seen = 0
        started = time.perf_counter()
        while seen < records:
            batch = await consumer.getmany(timeout_ms=1000, max_records=10_000)
            for messages in batch.values():
                for message in messages:
                    orjson.loads(message.value)
                seen += len(messages)
        return records / (time.perf_counter() - started)
    finally:
        await consumer.stop()


async def run_bench(
    records: int, keys: int, orgs: int, partitions: int, *, deliveries: int, emails: int
) -> BenchResult:
    bootstrap = Settings().kafka.bootstrap_servers
    run = uuid.uuid4().hex[:8]
    workdir = Path(tempfile.mkdtemp(prefix="quota-bench-"))
    config = isolated_config(
        f"bench-{run}", bootstrap=bootstrap, partitions=partitions, data_dir=workdir / "data"
    )
    settings = Settings.model_validate(config)
    await probe_broker(settings)
    await create_topics(settings, contract_topics(settings), partitions)
    try:
        session = orjson.dumps({"quota_max": 1000, "quota_renewal_rate": 3600})
        await publish(
            settings, settings.topics.sessions, [(f"bench-key-{i}", session) for i in range(keys)]
        )
        # Load the sessions into the worker's table first, so that the timed run starts from a
        # worker that knows every key (as in production) rather than racing the sessions.
        worker = WorkerProcess(config, workdir, name="bench-worker")
        worker.start()
        await worker.wait_healthy()
        await wait_committed(settings, settings.topics.sessions, keys, timeout=300)
        worker.stop()

        produce_rate = await produce_load(settings, records, keys, orgs)
        ceiling_rate = await ceiling(settings, records)

        worker = WorkerProcess(config, workdir, name="bench-worker-timed")
        worker.start()
        await worker.wait_ready(timeout=300)
        started = time.perf_counter()
        await wait_committed(settings, settings.topics.requests, records, timeout=1800)
        usage_rate = records / (time.perf_counter() - started)
        worker.stop()
        delivery = email_rate = None
        if deliveries:
            delivery = await run_delivery_bench(config, workdir, deliveries)
        if emails:
            email_rate = await run_email_bench(config, workdir, emails)
    finally:
        await remove_topics(settings)
    return BenchResult(
        records,
        keys,
        orgs,
        partitions,
        produce_rate,
        ceiling_rate,
        usage_rate,
        delivery,
        email_rate,
    )


def show(result: BenchResult, console: Console) -> None:
    table = Table(title="quota-pipeline bench")
    table.add_column("measure")
    table.add_column("records/s", justify="right")
    table.add_row("produce (load generator)", f"{result.produce_per_s:,.0f}")
    table.add_row("ceiling: aiokafka consume + orjson", f"{result.ceiling_per_s:,.0f}")
    table.add_row("usage stage (worker, committed)", f"{result.usage_per_s:,.0f}")
    table.add_row("usage / ceiling", f"{result.ratio:.2f}")
    console.print(table)
    if result.deliveries is not None:
        endpoints = result.deliveries.endpoints
        deliveries = Table(title=f"webhook deliveries, one worker, {endpoints} endpoints")
        deliveries.add_column("measure")
        deliveries.add_column("webhooks/s", justify="right")
        deliveries.add_row("every endpoint healthy", f"{result.deliveries.healthy_per_s:,.0f}")
        deliveries.add_row(
            f"{endpoints - 1} healthy endpoints, 1 timing out",
            f"{result.deliveries.beside_hanging_per_s:,.0f}",
        )
        deliveries.add_row("kept while one times out", f"{result.deliveries.kept:.2f}")
        console.print(deliveries)
    if result.emails_per_s is not None:
        console.print(f"emails to a local SMTP server, one worker: {result.emails_per_s:,.0f}/s")
    console.print(
        f"{result.records:,} records, {result.keys:,} keys, {result.orgs:,} orgs, "
        f"{result.partitions} partitions"
    )


def bench(
    records: int,
    keys: int,
    orgs: int,
    partitions: int,
    *,
    deliveries: int,
    emails: int,
    json_path: str | None,
) -> int:
    """Entry point of `quota-pipeline bench`."""
    result = asyncio.run(
        run_bench(records, keys, orgs, partitions, deliveries=deliveries, emails=emails)
    )
    show(result, Console())
    if json_path:
        figures = {**asdict(result), "ratio": result.ratio}
        if result.deliveries is not None:
            figures["deliveries"] = {**asdict(result.deliveries), "kept": result.deliveries.kept}
        Path(json_path).write_bytes(orjson.dumps(figures, option=orjson.OPT_INDENT_2))
    return 0
