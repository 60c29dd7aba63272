"""Source offsets already applied to the tables: what makes reading a record twice harmless.

faust can hand a record to an agent again: its committed offsets may lag what was processed
(its ack bookkeeping stalls on a repeated offset, and then advances one offset per commit), and
it re-delivers a record whose offset equals the last one it read. After a crash everything
after the committed offset is processed again. Counting any of those twice breaks the promise
that usage is exact and every threshold fires once.

So each batch also stores the offset of the last source record it applied, in the
``applied_offsets`` table, written with the batch's other table changes (in the same Kafka
transaction under exactly_once). Before a batch is applied, records at or below that mark are
dropped: a record is applied at most once, however often it is read.

A source partition is read in offset order by one agent at a time, so one mark per partition is
enough. Org partials have one too, for reading a partials partition again; a partial sent twice
(a batch of requests applied again after a crash) is caught by the origin that each org's usage
keeps (pipeline.usage.partials.is_new).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")


def mark_key(topic: str, partition: int) -> str:
    """The applied_offsets key of a source partition."""
    return f"{topic}:{partition}"


def unapplied(items: Sequence[T], offset_of: Callable[[T], int], applied: int | None) -> list[T]:
    """The items whose offset is above the mark: those not applied yet, in their order.
    ``items`` are in offset order (one partition's records, as fetched)."""
    if applied is None or not items or offset_of(items[0]) > applied:
        return list(items)  # the usual case: nothing of the batch was applied
    return [item for item in items if offset_of(item) > applied]
