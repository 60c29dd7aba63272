"""Table recovery from the changelogs a fetch at a time, not a record at a time.

faust's Recovery service reads a changelog record by record: the fetch loop
(``Consumer._drain_messages``) awaits ``Service.wait_first`` per record and the conductor decodes
its key and value into an Event for the changelog queue; ``Recovery._slurp_changelogs`` then
takes each Event with ``asyncio.wait_for(queue.get(), 5.0)`` (a task per record), checks
``need_recovery()`` over every partition per record, and hands the Events to the table in
buffers of 1,000. Profiled (py-spy) while recovering 200,000 changelog records, that per-record
path was about 88% of the main thread and writing to RocksDB about 1%: about 6,000 records/s.

So the consumer (``pipeline.engine.consumer.LosslessFetchConsumer``) hands each fetched run of a
changelog partition to :func:`apply_runs`, which does for the run what ``_slurp_changelogs``
does per record: skip the offsets the Recovery has seen, write the rest to the table in one
batch (``apply_changelog_batch``, as faust's buffers do), and move the Recovery's offset for the
partition on. faust stays in charge of everything else: the assignment, which partitions are
active or standby, where reading starts (its seeks), the highwaters, and the end of recovery,
which the consumer signals as ``_slurp_changelogs`` does, once ``need_recovery()`` says so.

Only tables whose store writes the records' raw bytes (RocksDB) and that have no
``on_changelog_event`` callback are recovered this way; faust's own path keeps the others (the
memory store applies *decoded* keys and values).

Under exactly_once the consumer reads read_committed: aiokafka drops aborted records and the
transaction markers before they reach us, and the offsets they held are never seen. The highwater
faust recovers up to is then usually a commit marker, which no record reaches; faust's
Recovery notices that only after two idle 5 s waits of its queue (``detect_aborted_tx``). The
consumer instead asks aiokafka for the partition's position after each fetch:
:func:`read_to_end` treats a partition whose position is past its highwater as recovered,
because everything before the position has been handed on.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Mapping, MutableMapping, Sequence
from time import monotonic
from typing import Any, NamedTuple

from faust.stores.rocksdb import Store as RocksDBStore
from faust.types import TP


class ChangelogMessage(NamedTuple):
    """The fields of a faust Message that a store's ``apply_changelog_batch`` reads."""

    tp: TP
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


class ChangelogEvent(NamedTuple):
    """Stands in for the faust Event of a changelog record (a tuple: cheap per record)."""

    message: ChangelogMessage


def events_of(tp: TP, records: Iterable[Any]) -> list[ChangelogEvent]:
    """The events of aiokafka ConsumerRecords of ``tp``, in their order."""
    partition = tp.partition
    return [
        ChangelogEvent(ChangelogMessage(tp, partition, r.offset, r.key, r.value)) for r in records
    ]


def unseen(records: Sequence[Any], seen: int | None) -> Sequence[Any]:
    """The records of a run (offset order) after offset ``seen``: faust's Recovery applies a
    record only if its offset is above the last one it has seen (None: none seen)."""
    if seen is None or not records or records[0].offset > seen:
        return records
    return records[bisect_right(records, seen, key=lambda record: record.offset) :]


def remaining(highwaters: Mapping[TP, int | None], offsets: Mapping[TP, int | None]) -> int:
    """Records left before every partition reaches its highwater, as faust's Recovery counts
    them (partitions without a highwater or an offset yet count for nothing)."""
    total = 0
    for tp, highwater in highwaters.items():
        offset = offsets.get(tp)
        if highwater is not None and offset is not None and highwater > offset:
            total += highwater - offset
    return total


def lagging(highwaters: Mapping[TP, int | None], offsets: Mapping[TP, int | None]) -> list[TP]:
    """The partitions below their highwater."""
    return [
        tp
        for tp, highwater in highwaters.items()
        if highwater is not None and (offset := offsets.get(tp)) is not None and highwater > offset
    ]


def read_to_end(
    positions: Mapping[TP, int | None], highwaters: Mapping[TP, int | None]
) -> dict[TP, int]:
    """Partitions read past their highwater (faust's: the end offset minus one), with it.

    A position is the next offset to fetch: past the highwater, every offset up to it has been
    fetched, and what was not handed on was a transaction marker or an aborted record.
    (faust's own check, ``position >= highwater``, would also pass a partition whose last
    record, at the highwater, is yet to come.)"""
    return {
        tp: highwater
        for tp, position in positions.items()
        if position is not None
        and (highwater := highwaters.get(tp)) is not None
        and position > highwater
    }


def bulk_recoverable(table: Any) -> bool:
    """Whether a table's changelog records can skip faust's per-record path: its store writes
    the raw bytes, and nothing wants to see each record."""
    return isinstance(table.data, RocksDBStore) and not table._on_changelog_event


def apply_runs(recovery: Any, runs: Iterable[tuple[TP, Sequence[Any]]]) -> bool:
    """Apply runs of changelog records to their tables, as ``Recovery._slurp_changelogs`` does
    per record; True if any standby partition moved on. Does not await: the Recovery's
    bookkeeping never changes under it."""
    now = monotonic()
    standby_moved = False
    for tp, records in runs:
        if tp in recovery.active_tps:
            offsets = recovery.active_offsets
            received = recovery._active_events_received_at
        elif tp in recovery.standby_tps:
            offsets = recovery.standby_offsets
            received = recovery._standby_events_received_at
        else:
            # Neither active nor standby any more (revoked): faust's loop would apply it to
            # whichever table it saw last (a warning in its source says so); its owner reads it.
            continue
        fresh = unseen(records, offsets.get(tp))
        if not fresh:
            continue
        table = recovery.tp_to_table[tp]
        buffered = recovery.buffers.get(table)
        if buffered:
            # Records faust's own path buffered for this table go first, to keep their order.
            table.apply_changelog_batch(buffered)
            buffered.clear()
        table.apply_changelog_batch(events_of(tp, fresh))
        offsets[tp] = fresh[-1].offset
        received[tp] = now
        recovery._last_flush_at = now
        standby_moved = standby_moved or offsets is recovery.standby_offsets
    return standby_moved


def end_recovery_if_done(recovery: Any) -> bool:
    """What ``_slurp_changelogs`` does after each record: once no active partition is below its
    highwater, apply what is buffered, mark recovery ended and wake the Recovery waiting for it.
    True if it ended."""
    if not recovery.in_recovery or recovery.need_recovery():
        return False
    recovery.flush_buffers()
    recovery._set_recovery_ended()
    # Set and cleared at once, as in faust (its loop clears the event before it awaits again):
    # this wakes the wait under way and leaves nothing set for the next rebalance's wait.
    signal = recovery.signal_recovery_end
    signal.set()
    signal.clear()
    return True


def note_standbys_ready(recovery: Any) -> None:
    """What ``_slurp_changelogs`` does for standbys: tell the tables once they are caught up."""
    tables = recovery.tables
    if not tables.standbys_ready and not remaining(
        recovery.standby_highwaters, recovery.standby_offsets
    ):
        tables.on_standbys_ready()


def set_offsets(offsets: MutableMapping[TP, int | None], ends: Mapping[TP, int]) -> None:
    """Move offsets up to ``ends`` (never back)."""
    for tp, end in ends.items():
        offset = offsets.get(tp)
        if offset is None or offset < end:
            offsets[tp] = end
