"""The steps the four state agents (sessions, usage, orgs, org usage) share for one partition's
share of a batch: drop what was applied already, write a plan, sweep held requests, count them.

Every batch writes in this order: events first (triggers, partials, rejections), then the
tables, then the applied_offsets mark. A crash between them repeats an event (with its id)
rather than losing one, and reads the records again rather than never. Under at_least_once
those writes are not one transaction: a key's usage state and held requests keep the offset of
their last request (pipeline.usage.keys), so a request read again is not counted again.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, Generic, NamedTuple, TypeVar

from pipeline.engine import TP, SourceEvent, Table
from pipeline.errors import failure_reason
from pipeline.service.metrics import HELD_DROPPED, HELD_RELEASED, HELD_REQUESTS, HELD_SUBJECTS
from pipeline.usage.held import HeldLedger, HoldPolicy, HoldTally, sweep
from pipeline.usage.plans import BatchPlan
from pipeline.usage.watermarks import mark_key, unapplied
from pipeline.wiring import Pipeline

T = TypeVar("T")


class PartitionBatch(NamedTuple):
    """One partition's records of a batch that were not applied before."""

    #: The last fetched record: table writes and sends act on its behalf (its partition's
    #: transaction), and its offset becomes the mark.
    source: SourceEvent
    #: The applied_offsets key of the partition.
    mark: str
    records: list[Any]


def offset_of(record: Any) -> int:
    """The offset of a fetched record."""
    offset: int = record.offset
    return offset


def unapplied_batch(
    pipeline: Pipeline, name: str, tp: TP, fetched: list[Any]
) -> PartitionBatch | None:
    """The records of ``fetched`` above the partition's applied mark; None when every one was
    applied already (read again after a restart, or delivered twice)."""
    mark = mark_key(name, tp.partition)
    source = SourceEvent.of(tp, fetched[-1])
    fresh = unapplied(fetched, offset_of, pipeline.tables.applied.get(mark, source))
    return PartitionBatch(source, mark, fresh) if fresh else None


class Decoded(NamedTuple, Generic[T]):
    """The records of one partition that decoded, and the fetched records they came from."""

    values: list[T]
    sources: list[Any]


async def decode_records(
    pipeline: Pipeline,
    tp: TP,
    records: Iterable[Any],
    decode: Callable[[bytes | None, bytes | None], T],
) -> Decoded[T]:
    """Decode fetched records of partition ``tp`` (of a bulk feed) from their key and value,
    rejecting every record that fails to, whatever the error: one bad record must never stop
    the others."""
    values: list[T] = []
    sources: list[Any] = []
    for record in records:
        try:
            values.append(decode(record.key, record.value))
        except Exception as exc:  # InvalidRecord, or a decoder failing on input it never saw
            await pipeline.reject(SourceEvent.of(tp, record), failure_reason(exc))
            continue
        sources.append(record)
    return Decoded(values, sources)


async def reject_failed(
    pipeline: Pipeline, tp: TP, sources: Sequence[Any], failed: Mapping[int, str]
) -> None:
    """Reject the records a plan could not process (``failed``: index in ``sources`` -> why)."""
    for index, reason in sorted(failed.items()):
        await pipeline.reject(SourceEvent.of(tp, sources[index]), reason)


def per_partition(
    apply: Callable[[TP, list[Any]], Awaitable[None]],
) -> Callable[[dict[TP, list[Any]]], Awaitable[None]]:
    """A batch handler (pipeline.engine.runs.process_runs) applying each partition's records."""

    async def handle(fetched: dict[TP, list[Any]]) -> None:
        for tp, records in fetched.items():
            await apply(tp, records)

    return handle


async def write_plan(
    pipeline: Pipeline, batch: PartitionBatch, plan: BatchPlan, tables: Mapping[str, Table]
) -> None:
    """Write a plan's table changes, then the batch's mark (its triggers went out before)."""
    source = batch.source
    for name, items in plan.writes.items():
        await tables[name].write(source, items)
    await pipeline.tables.applied.write(source, {batch.mark: source.message.offset})


async def emit_triggers(pipeline: Pipeline, batch: PartitionBatch, plan: BatchPlan) -> None:
    """Send a plan's trigger events, in the transaction of the batch's partition."""
    if plan.triggers:
        triggers = [(subject.encode(), payload) for subject, payload in plan.triggers]
        await pipeline.engine.emit(batch.source, pipeline.topics.triggers, triggers)


class Swept(NamedTuple):
    """What a sweep of a partition's held subjects found expired."""

    subjects: frozenset[str] = frozenset()
    requests: int = 0

    def into(self, plan: BatchPlan, table: str) -> None:
        """Add the deletions of the expired subjects to ``plan`` (unless it holds one anew)."""
        for subject in self.subjects:
            plan.writes.setdefault(table, {}).setdefault(subject, None)
        plan.tally.drop("expired", self.requests)


def sweep_held(
    ledger: HeldLedger, table: Table, source: SourceEvent, *, policy: HoldPolicy, epoch: int
) -> Swept:
    """If the partition's held subjects are due for a sweep (first batch after a rebalance,
    then every ``ledger.sweep_every``), count them in the ledger and return the expired ones."""
    now = time.time()
    partition = source.message.partition
    if not ledger.needs_sweep(partition, now, epoch):
        return Swept()
    tally = HoldTally()
    entries = table.scan(source)
    expired, counted = sweep(entries, now=now, epoch=epoch, policy=policy, tally=tally)
    ledger.swept(partition, counted)
    return Swept(frozenset(expired), tally.dropped.get("expired", 0))


def count_held(ledger: HeldLedger, partition: int, tally: HoldTally, subject: str) -> None:
    """Take one batch's tally into the ledger and the metrics."""
    ledger.add(partition, tally)
    subjects, requests = ledger.totals()
    HELD_SUBJECTS.labels(subject=subject).set(subjects)
    HELD_REQUESTS.labels(subject=subject).set(requests)
    if tally.released:
        HELD_RELEASED.labels(subject=subject).inc(tally.released)
    for reason, count in tally.dropped.items():
        HELD_DROPPED.labels(subject=subject, reason=reason).inc(count)
