"""`quota-pipeline bench`, ingest part: one worker re-keying a Tyk Pump load into
gateway.requests (pipeline.ingest), beside a bare consumer reading and decoding the same
source topic.

The load is what Tyk Pump's Kafka pump writes: one unkeyed analytics record per request
(pipeline.devtools.gateway_logs ``tyk_pump_message``, 400 to 500 bytes), spread over the
partitions in turn as the pump's writer spreads them. Event time advances EVENT_RATE records
per second, as a busy gateway cluster's does, so that the ingest stage's per-key, per-second
sums are what they would be in real traffic; REFUSED_SHARE of the records are Tyk's own 429s
(they count for their org only) and KEYLESS_SHARE are requests to keyless APIs.
"""

from __future__ import annotations

import asyncio
import random
import statistics
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import zip_longest
from pathlib import Path
from typing import Any, NamedTuple

import orjson

from pipeline.bench.delivery import derived_config
from pipeline.bench.plan import KeySampler
from pipeline.bench.usage import (
    LOAD_PRODUCER,
    T0,
    USAGE_ORG,
    USAGE_SESSION,
    ceiling,
    key_name,
    org_name,
    start_workers,
    stop_workers,
)
from pipeline.cli.files import publish
from pipeline.cli.topics import contract_topics
from pipeline.config import Settings
from pipeline.devtools.demo import remove_topics
from pipeline.devtools.gateway_logs import tyk_pump_message
from pipeline.engine.batches import filled_batches
from pipeline.engine.clients import (
    create_topics,
    producer,
    read_topic,
    wait_committed,
)

#: Records per second of event time: a gateway cluster serving 5,000 requests/s.
EVENT_RATE = 5_000
#: Shares of the load refused by Tyk itself (429 of a key's rate limit, counted for the org
#: only) and sent to keyless APIs (org only too).
REFUSED_SHARE = 0.02
KEYLESS_SHARE = 0.01
#: Each key calls one of this many APIs.
APIS = 8
#: Passes of the bare consumer over the source topic, of which the ceiling is the median.
CEILING_PASSES = 3


class PumpRecord(NamedTuple):
    """One request of the load: its key (None on a keyless API), org, event time, status."""

    key: int | None
    org: int
    ts: float
    code: int

    @property
    def counts_for_key(self) -> bool:
        return self.key is not None and self.code != 429


def pump_plan(
    records: int, keys: int, orgs: int, *, exponent: float | None = None, seed: int = 3
) -> Iterator[PumpRecord]:
    """``records`` requests, keys drawn as the usage run draws them (uniform, or zipf with
    ``exponent``), key i in org ``i % orgs`` (pure)."""
    rng = random.Random(seed)  # noqa: S311 - load generation, not cryptography
    sampler = KeySampler(keys, exponent)
    for i in range(records):
        key = sampler.draw(rng)
        ts = T0 + i / EVENT_RATE
        share = rng.random()
        if share < KEYLESS_SHARE:
            yield PumpRecord(None, key % orgs, ts, 200)
        else:
            code = 429 if share < KEYLESS_SHARE + REFUSED_SHARE else 200
            yield PumpRecord(key, key % orgs, ts, code)


def pump_message(record: PumpRecord) -> bytes:
    """The record as the pump writes it; a 429 without ``raw_response`` (detailed recording
    is off by default), which the ingest stage takes for Tyk's own refusal."""
    key = "" if record.key is None else key_name(record.key)
    api = "bench-open-api" if record.key is None else f"bench-api-{record.key % APIS}"
    return tyk_pump_message(
        key=key, org_id=org_name(record.org), api_id=api, ts=record.ts, response_code=record.code
    )


@dataclass(frozen=True)
class IngestBenchResult:
    """One worker's ingest stage on a Tyk Pump load, beside the bare consumer's ceiling."""

    #: Source records, and those timed: all but the ingest group's first commit.
    records: int
    timed: int
    seconds: float
    #: The load generator's rate, before the worker started.
    produce_per_s: float
    #: The bare consumer's rate of each pass over the whole source topic, records/s.
    ceiling_passes: tuple[float, ...]
    #: Every source record, and those that count for their key.
    source_records: int
    keyed: int
    #: gateway.requests records produced, and the sum of their ``count``.
    request_records: int
    requests_counted: int
    #: Mean bytes of a source record.
    message_bytes: float

    @property
    def records_per_s(self) -> float:
        """0 when the first commit took every record (a tiny run): nothing was timed."""
        return self.timed / self.seconds if self.timed and self.seconds > 0 else 0.0

    @property
    def ceiling_per_s(self) -> float:
        """The median pass, as for the usage stage's ceiling."""
        return statistics.median(self.ceiling_passes)

    @property
    def ratio(self) -> float:
        """Ingest / ceiling, both in source records/s."""
        return self.records_per_s / self.ceiling_per_s if self.ceiling_per_s else 0.0

    @property
    def aggregation(self) -> float:
        """Source records per gateway.requests record: what the per-second sums save the
        usage stage."""
        return self.source_records / self.request_records if self.request_records else 0.0

    @property
    def counts_match(self) -> bool:
        """Whether the sums counted every keyed request once: none lost or counted twice."""
        return self.requests_counted == self.keyed


def ingest_config(base: dict[str, Any]) -> dict[str, Any]:
    """``base`` with an app id, topics and data dir of its own, and a Tyk Pump source."""
    config = derived_config(base, "ingest")
    topic = f"{config['app_id']}.tyk-analytics"
    return {**config, "ingest": {"sources": [{"format": "tyk-pump", "topic": topic}]}}


def round_robin_batches(client: Any, values: Sequence[bytes], partitions: int) -> list[Any]:
    """Unkeyed ``values`` dealt to the partitions in turn, in record batches (none sent), the
    partitions' batches taken in turn so that sending them fills every partition at once:
    (partition, batch) each."""
    dealt = [
        [(p, batch) for batch in filled_batches(client, ((None, v) for v in values[p::partitions]))]
        for p in range(partitions)
    ]
    return [batch for turn in zip_longest(*dealt) for batch in turn if batch is not None]


async def produce_unkeyed(settings: Settings, topic: str, values: Sequence[bytes]) -> float:
    """Send ``values`` as fast as the client allows; the perf_counter() of the first send (the
    batches are filled before it)."""
    async with producer(settings, **LOAD_PRODUCER) as client:
        partitions = len(await client.partitions_for(topic))
        batches = round_robin_batches(client, values, partitions)
        started = time.perf_counter()
        acks = [
            await client.send_batch(batch, topic, partition=partition)
            for partition, batch in batches
        ]
        await asyncio.gather(*acks)
    return started


def request_sums(records: Sequence[Any]) -> int:
    """The sum of the ``count`` of gateway.requests records."""
    return sum(int(orjson.loads(record.value)["count"]) for record in records)


async def run_ingest_bench(
    config: dict[str, Any],
    workdir: Path,
    records: int,
    *,
    keys: int,
    orgs: int,
    exponent: float | None,
) -> IngestBenchResult:
    """One worker ingesting ``records`` Tyk Pump records, then the ceiling on the same topic.

    How the ingest stage is timed: the records are in the source topic before the worker
    starts (a session for every key loaded), as they are for the ceiling's consumer. The clock
    starts when the ingest group's first commit is seen (its relay has joined, fenced and done
    a batch) and stops when its committed offsets reach the end; the records of that first
    commit are not counted. So start-up is not timed, and every other record's consume,
    decode, sum, transaction and the worker's own usage stage on the sums are, on a machine
    shared with the broker only (where producing while the worker ran, the load generator
    took a core from it: 0.10.0's figures for the usage stage are taken that way).
    """
    config = ingest_config(config)
    settings = Settings.model_validate(config)
    source = settings.ingest.sources[0].topic
    group = f"{settings.app_id}-ingest"
    plan = list(pump_plan(records, keys, orgs, exponent=exponent))
    values = [pump_message(record) for record in plan]
    await create_topics(settings, contract_topics(settings), settings.kafka.partitions)
    try:
        session, org = orjson.dumps(USAGE_SESSION), orjson.dumps(USAGE_ORG)
        await publish(
            settings, settings.topics.sessions, [(key_name(i), session) for i in range(keys)]
        )
        await publish(settings, settings.topics.orgs, [(org_name(i), org) for i in range(orgs)])
        started = await produce_unkeyed(settings, source, values)
        produced = time.perf_counter() - started
        workers = await start_workers([config], workdir, "ingest")
        try:
            first = await wait_committed(settings, source, 1, timeout=600, group=group)
            clock = time.perf_counter()
            await wait_committed(settings, source, len(values), timeout=1800, group=group)
            seconds = time.perf_counter() - clock
        finally:
            await stop_workers(workers)
        sums = await read_topic(settings, settings.topics.requests) or []
        # With the worker stopped: the ceiling has the machine to itself.
        on_source = settings.model_copy(
            update={"topics": settings.topics.model_copy(update={"requests": source})}
        )
        passes = [await ceiling(on_source, len(values)) for _ in range(CEILING_PASSES)]
    finally:
        await remove_topics(settings)
    return IngestBenchResult(
        records=records,
        timed=len(values) - first,
        seconds=seconds,
        produce_per_s=records / produced,
        ceiling_passes=tuple(passes),
        source_records=len(values),
        keyed=sum(1 for record in plan if record.counts_for_key),
        request_records=len(sums),
        requests_counted=request_sums(sums),
        message_bytes=sum(map(len, values)) / len(values),
    )
