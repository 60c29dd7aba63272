"""The ingest stage: every configured source topic read by a relay (pipeline.engine.relay, in
the worker's ingest process: pipeline.ingest.process), each partition's batch turned into
summed gateway.requests records, org partials for the requests that count for their org only,
and rejections, committed with the batch's source offsets in one transaction; each commit
counted in the worker's metrics as a Tally."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import orjson

from pipeline.config import IngestSource, Settings, TykPumpSource
from pipeline.engine.relay import Output, Relay
from pipeline.errors import failure_reason
from pipeline.ingest.aggregate import Aggregate
from pipeline.ingest.apisix import apisix_reader
from pipeline.ingest.hits import Reader
from pipeline.ingest.tyk_pump import tyk_pump_reader
from pipeline.records.rejections import copied, rejection
from pipeline.service.metrics import INGEST_PRODUCED, INGESTED, REJECTED
from pipeline.wiring import org_partials_name

#: Source records per batch, and how long the first waits for the batch to fill. A batch's
#: records of one key and second become one record: fuller batches sum more.
BATCH_MAX = 20_000
BATCH_WITHIN = 0.25


def reader_for(source: IngestSource) -> Reader:
    if isinstance(source, TykPumpSource):
        return tyk_pump_reader(source)
    return apisix_reader(source)


class Ingest:
    """What one partition's batch of a source becomes."""

    def __init__(self, settings: Settings, counted: Callable[[Tally], None] | None = None) -> None:
        #: Told of each committed transaction: the worker's metrics unless said otherwise.
        self._counted = counted or count_committed(settings)
        self._readers = {source.topic: reader_for(source) for source in settings.ingest.sources}
        self._requests = settings.topics.requests
        self._partials = org_partials_name(settings)
        self._rejected = settings.topics.rejected

    def transform(self, tp: Any, records: Sequence[Any]) -> list[Output]:
        """The outputs of one partition's records (aiokafka's own: offset, key, value; in order)."""
        read = self._readers[tp.topic]
        outputs: list[Output] = []
        aggregate = Aggregate()
        add = aggregate.add
        for record in records:
            try:
                read(record.value, add)
            except Exception as exc:  # InvalidRecord, or a reader failing on input it never saw
                outputs.append(self._rejection(tp, record, failure_reason(exc)))
        requests = self._requests
        outputs += ((requests, key, value) for key, value in aggregate.request_counts())
        stream = f"{tp.topic}/{tp.partition}"
        partials = self._partials
        outputs += (
            (partials, key, value)
            for key, value in aggregate.org_partials(stream, records[-1].offset)
        )
        return outputs

    def committed(self, tp: Any, consumed: int, outputs: Sequence[Output]) -> None:
        """A partition's batch is committed: tell ``counted``."""
        produced: dict[str, int] = {}
        for topic, _, _ in outputs:
            produced[topic] = produced.get(topic, 0) + 1
        self._counted(Tally(tp.topic, consumed, produced))

    def _rejection(self, tp: Any, record: Any, reason: str) -> Output:
        value = rejection(
            topic=tp.topic,
            partition=tp.partition,
            offset=record.offset,
            key=record.key,
            value=record.value,
            reason=reason,
            now=time.time(),
        )
        return (self._rejected, copied(record.key), value)


class Tally(NamedTuple):
    """What one committed transaction adds to the metrics."""

    source: str
    consumed: int
    #: Output topic (the rejections' included) -> records.
    produced: dict[str, int]

    def to_json(self) -> bytes:
        return orjson.dumps(self._asdict())

    @classmethod
    def from_json(cls, line: bytes) -> Tally:
        return cls(**orjson.loads(line))


def count_committed(settings: Settings) -> Callable[[Tally], None]:
    """Counts a tally in the worker's metrics."""
    rejected = settings.topics.rejected

    def count(tally: Tally) -> None:
        INGESTED.labels(topic=tally.source).inc(tally.consumed)
        for topic, records in tally.produced.items():
            if topic == rejected:
                REJECTED.labels(topic=tally.source).inc(records)
            else:
                INGEST_PRODUCED.labels(topic=topic).inc(records)

    return count


def ingest_relay(settings: Settings, *, counted: Callable[[Tally], None] | None = None) -> Relay:
    """The relay of every configured source, in consumer group ``<app id>-ingest``; each
    committed transaction is told to ``counted`` (the worker's metrics by default)."""
    ingest = Ingest(settings, counted)
    return Relay(
        settings,
        [source.topic for source in settings.ingest.sources],
        f"{settings.app_id}-ingest",
        ingest.transform,
        committed=ingest.committed,
        max_records=BATCH_MAX,
        within=BATCH_WITHIN,
    )
