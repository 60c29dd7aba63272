"""`quota-pipeline bench`, latency part: from producing a threshold-crossing record to its
webhook arriving at a local receiver, at a steady load of half the usage stage's measured rate.

One org (unlimited, so it never fires itself) has its ``trigger_event.webhook`` at a receiver in
this process. Background keys have a quota they never reach, and are drawn as the usage run
draws its keys (``--skew``); one record in ``crossing_every`` goes to a fresh crossing key
whose quota is 1 with the single threshold 100, so that record fires exactly one trigger. Its
key pairs the webhook (the body's ``key``) with the moment the record was handed to the
producer; both are read on this event loop's monotonic clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import orjson

from pipeline.bench.delivery import derived_config
from pipeline.bench.plan import crossing_keys, latency_plan, percentile
from pipeline.bench.usage import start_workers, stop_workers, worker_configs
from pipeline.cli.files import publish
from pipeline.cli.topics import contract_topics
from pipeline.config import Settings
from pipeline.devtools.demo import remove_topics
from pipeline.devtools.receiver import ReceivedWebhook, WebhookReceiver
from pipeline.engine import clients
from pipeline.engine.batches import KeyPartitions, partitioned_batches
from pipeline.engine.clients import create_topics, wait_committed

log = logging.getLogger(__name__)

ORG = "bench-latency-org"
#: A quota the background keys never approach.
BACKGROUND_SESSION = {"org_id": ORG, "quota_max": 10**12, "quota_renewal_rate": 3600}
#: A crossing key's first record reaches 100% of it.
CROSSING_SESSION = {
    "org_id": ORG,
    "quota_max": 1,
    "quota_renewal_rate": 3600,
    "monitor": {"trigger_limits": [100]},
}
#: Records are produced in bursts this far apart, each burst holding the records now due.
TICK = 0.01
#: How long webhooks may still arrive after the last record was produced.
DRAIN_TIMEOUT = 60.0


@dataclass(frozen=True)
class LatencyBench:
    """Produce-to-webhook latency at a steady load."""

    #: Records/s asked for: half the usage stage's measured rate.
    rate_per_s: float
    #: Records/s the load generator achieved (below rate_per_s if it could not keep up).
    produced_per_s: float
    seconds: float
    records: int
    #: Threshold-crossing records among them: the webhooks expected.
    crossings: int
    #: One record in this many crosses.
    crossing_every: int
    #: Webhooks that arrived and were paired with their record.
    matched: int
    p50_s: float
    p99_s: float
    max_s: float
    #: Every matched latency, seconds: for the plot; not written to the JSON.
    samples: tuple[float, ...] = field(default=(), repr=False, compare=False)

    @property
    def webhooks_per_s(self) -> float:
        """The webhooks the load asked for, per second of it: its delivery work beside the
        records'."""
        return self.crossings / self.seconds if self.seconds else 0.0


def background_key(index: int) -> str:
    return f"bench-latency-key-{index}"


def crossing_key(index: int) -> str:
    return f"bench-latency-cross-{index}"


async def run_latency_bench(
    base: dict[str, Any],
    workdir: Path,
    *,
    rate: float,
    seconds: float,
    background_keys: int,
    workers: int,
    crossing_every: int,
    exponent: float | None = None,
) -> LatencyBench:
    """The whole latency run, with its own app id and topics derived from ``base``."""
    records = max(round(rate * seconds), 10 * crossing_every)  # ten crossings at least
    crossings = crossing_keys(records, crossing_every)
    config = derived_config(base, "latency")
    settings = Settings.model_validate(config)
    await create_topics(settings, contract_topics(settings), settings.kafka.partitions)
    try:
        async with WebhookReceiver() as receiver:
            org = {"quota_max": -1, "event_options": {"trigger_event": {"webhook": receiver.url}}}
            await publish(settings, settings.topics.orgs, [(ORG, orjson.dumps(org))])
            background = orjson.dumps(BACKGROUND_SESSION)
            crossing = orjson.dumps(CROSSING_SESSION)
            sessions = [(background_key(i), background) for i in range(background_keys)]
            sessions += [(crossing_key(i), crossing) for i in range(crossings)]
            await publish(settings, settings.topics.sessions, sessions)
            running = await start_workers(worker_configs(config, workers), workdir, "latency")
            try:
                await wait_committed(settings, settings.topics.sessions, len(sessions), 600)
                plan = latency_plan(background_keys, crossing_every, exponent=exponent)
                sent_at, took = await produce_steadily(settings, records, rate, plan)
                with contextlib.suppress(TimeoutError):
                    await receiver.wait_for(crossings, timeout=DRAIN_TIMEOUT)
            finally:
                await stop_workers(running)
            latencies = pair(sent_at, receiver.received)
    finally:
        await remove_topics(settings)
    if len(latencies) < crossings:
        log.warning("latency: %d of %d webhooks arrived", len(latencies), crossings)
    if not latencies:
        raise RuntimeError(f"latency: none of {crossings} webhooks arrived; see {workdir}")
    return LatencyBench(
        rate_per_s=rate,
        produced_per_s=records / took,
        seconds=records / rate,
        records=records,
        crossings=crossings,
        crossing_every=crossing_every,
        matched=len(latencies),
        p50_s=percentile(latencies, 50),
        p99_s=percentile(latencies, 99),
        max_s=max(latencies),
        samples=tuple(latencies),
    )


class LatencyRecord(NamedTuple):
    """One record of the latency load, encoded before the clock starts."""

    partition: int
    key: bytes
    value: bytes
    #: The key, when this record crosses its threshold (its webhook is awaited).
    crossing: str | None


def encode_latency_load(
    records: int, rate: float, plan: Iterator[tuple[bool, int]], partition_of: KeyPartitions
) -> list[LatencyRecord]:
    """The first ``records`` records of ``plan``, each encoded and placed in its key's
    partition. Event times are those the records will be sent at, from now on at ``rate``:
    as fresh as a gateway's, give or take the time this takes."""
    now = time.time()
    load = []
    for index, (is_crossing, number) in enumerate(itertools.islice(plan, records)):
        key = crossing_key(number) if is_crossing else background_key(number)
        encoded = key.encode()
        value = orjson.dumps({"ts": now + index / rate, "org_id": ORG, "key": key, "count": 1})
        load.append(
            LatencyRecord(partition_of(encoded), encoded, value, key if is_crossing else None)
        )
    return load


class Tick(NamedTuple):
    """The records of one TICK of the latency load, ready to send."""

    #: (partition, record batch), filled before the clock starts.
    batches: list[tuple[int, Any]]
    #: The crossing keys among them.
    crossings: list[str]


def fill_ticks(producer: clients.Producer, load: list[LatencyRecord], rate: float) -> list[Tick]:
    """``load`` cut into the record batches of each TICK at ``rate``, per partition."""
    per_tick = max(1, round(rate * TICK))
    ticks = []
    for first in range(0, len(load), per_tick):
        records = load[first : first + per_tick]
        batches = partitioned_batches(producer, ((r.partition, r.key, r.value) for r in records))
        ticks.append(Tick(batches, [r.crossing for r in records if r.crossing is not None]))
    return ticks


async def produce_steadily(
    settings: Settings, records: int, rate: float, plan: Iterator[tuple[bool, int]]
) -> tuple[dict[str, float], float]:
    """Produce ``records`` records at ``rate`` per second; returns when each crossing record
    was handed to the producer, by key (event loop time), and the seconds it all took.

    The records are encoded and put in record batches, one per partition and TICK, before the
    clock starts (their keys' partitions under aiokafka's default partitioner, as a keyed send
    would choose); the clock only sends each TICK's batches when due. One ``send`` per record
    made at most about 38,000 records/s, and encoding as it went the load generator took more
    than half a core at 87,000 records/s, beside two workers and the broker on two cores.
    """
    loop = asyncio.get_running_loop()
    topic = settings.topics.requests
    sent_at: dict[str, float] = {}
    async with clients.producer(
        settings, enable_idempotence=False, acks=1, max_batch_size=262_144
    ) as producer:
        partition_of = KeyPartitions(sorted(await producer.partitions_for(topic)))
        ticks = fill_ticks(producer, encode_latency_load(records, rate, plan, partition_of), rate)
        started = loop.time()
        for number, tick in enumerate(ticks):
            # Pacing, not synchronisation: each TICK's records go when they are due.
            await asyncio.sleep(max(0.0, started + number * TICK - loop.time()))
            now = loop.time()
            for key in tick.crossings:
                sent_at[key] = now
            for partition, batch in tick.batches:
                await producer.send_batch(batch, topic, partition=partition)
        # Not a gather of every send's future: its hundreds of thousands of callbacks held this
        # loop, and with it the receiver, for over a second, and the last webhooks seemed late.
        await producer.flush()
        took = loop.time() - started
    return sent_at, took


def pair(sent_at: dict[str, float], received: list[ReceivedWebhook]) -> list[float]:
    """Seconds from each crossing record's produce to its webhook's arrival (the first one, if
    a webhook came twice); webhooks of other keys are ignored."""
    latencies: dict[str, float] = {}
    for webhook in received:
        key = orjson.loads(webhook.body).get("key")
        if key in sent_at and key not in latencies:
            latencies[key] = webhook.received_at - sent_at[key]
    return list(latencies.values())
