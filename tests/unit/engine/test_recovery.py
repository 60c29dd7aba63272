"""pipeline.engine.recovery: changelog runs applied to their tables a fetch at a time, with faust's
Recovery bookkeeping moved on as its per-record loop would, and the end of recovery signalled."""

from __future__ import annotations

import asyncio
from collections import Counter, defaultdict
from typing import Any, NamedTuple

from faust.types import TP

from pipeline.engine.recovery import (
    apply_runs,
    end_recovery_if_done,
    lagging,
    note_standbys_ready,
    read_to_end,
    remaining,
    set_offsets,
    unseen,
)
from tests.unit.engine.test_fetching import ConsumerThread, consumer_over

ACTIVE = TP("app-key_usage-changelog", 0)
STANDBY = TP("app-key_usage-changelog", 1)
REVOKED = TP("app-key_usage-changelog", 2)


class Record(NamedTuple):
    """The fields of an aiokafka ConsumerRecord that recovery reads."""

    offset: int
    key: bytes | None
    value: bytes | None


def run(*entries: tuple[int, str, str | None]) -> list[Record]:
    return [
        Record(offset, key.encode(), None if value is None else value.encode())
        for offset, key, value in entries
    ]


class Table:
    """Applies changelog batches as a store does: the last value per key, None deletes."""

    def __init__(self) -> None:
        self.state: dict[bytes, bytes] = {}
        self.applied: list[tuple[TP, int]] = []

    def apply_changelog_batch(self, batch: Any) -> None:
        for event in batch:
            message = event.message
            self.applied.append((message.tp, message.offset))
            if message.value is None:
                self.state.pop(message.key, None)
            else:
                self.state[message.key] = message.value


class TableManager:
    standbys_ready = False

    def on_standbys_ready(self) -> None:
        self.standbys_ready = True


class Recovery:
    """The attributes of faust's Recovery that recovery reads and moves on."""

    def __init__(self, table: Table) -> None:
        self.tables = TableManager()
        self.active_tps = {ACTIVE}
        self.standby_tps = {STANDBY}
        self.tp_to_table = {ACTIVE: table, STANDBY: table, REVOKED: table}
        self.active_offsets: Counter[TP] = Counter({ACTIVE: -1})
        self.standby_offsets: Counter[TP] = Counter({STANDBY: -1})
        self.active_highwaters: Counter[TP] = Counter({ACTIVE: 4})
        self.standby_highwaters: Counter[TP] = Counter({STANDBY: 2})
        self.buffers: defaultdict[Any, list[Any]] = defaultdict(list)
        self._active_events_received_at: dict[TP, float] = {}
        self._standby_events_received_at: dict[TP, float] = {}
        self._last_flush_at: float | None = None
        self.in_recovery = True
        self.signal_recovery_end = asyncio.Event()
        self.flushed = 0

    def need_recovery(self) -> bool:
        return remaining(self.active_highwaters, self.active_offsets) > 0

    def flush_buffers(self) -> None:
        self.flushed += 1

    def _set_recovery_ended(self) -> None:
        self.in_recovery = False


def test_unseen_skips_what_the_recovery_has_seen() -> None:
    records = run((3, "a", "1"), (5, "b", "2"), (9, "c", "3"))
    assert unseen(records, None) == records
    assert unseen(records, 2) == records
    assert unseen(records, 3) == records[1:]
    assert unseen(records, 4) == records[1:]
    assert unseen(records, 8) == records[2:]
    assert list(unseen(records, 9)) == []
    assert list(unseen([], 4)) == []


def test_remaining_and_lagging_ignore_partitions_without_a_highwater_or_offset() -> None:
    highwaters = {ACTIVE: 10, STANDBY: -1, REVOKED: None}
    offsets = {ACTIVE: 4, STANDBY: -1, REVOKED: 3}
    assert remaining(highwaters, offsets) == 6
    assert lagging(highwaters, offsets) == [ACTIVE]
    assert remaining({ACTIVE: 10}, {ACTIVE: None}) == 0
    assert remaining({ACTIVE: 10}, {ACTIVE: 10}) == 0


def test_read_to_end_needs_the_position_past_the_highwater() -> None:
    # Highwater 9 (end offset 10). Position 9: the record at 9 is still to come.
    assert read_to_end({ACTIVE: 9}, {ACTIVE: 9}) == {}
    assert read_to_end({ACTIVE: 10}, {ACTIVE: 9}) == {ACTIVE: 9}
    assert read_to_end({ACTIVE: None, STANDBY: 5}, {ACTIVE: 9}) == {}


def test_set_offsets_never_moves_back() -> None:
    offsets: dict[TP, int | None] = {ACTIVE: 7, STANDBY: None}
    set_offsets(offsets, {ACTIVE: 5, STANDBY: 2, REVOKED: 1})
    assert offsets == {ACTIVE: 7, STANDBY: 2, REVOKED: 1}


def test_runs_apply_the_last_value_per_key_and_tombstones_delete() -> None:
    table = Table()
    recovery = Recovery(table)
    apply_runs(recovery, [(ACTIVE, run((0, "a", "1"), (1, "b", "1"), (2, "a", "2")))])
    apply_runs(recovery, [(ACTIVE, run((3, "b", None), (4, "c", "1")))])
    assert table.state == {b"a": b"2", b"c": b"1"}
    assert recovery.active_offsets[ACTIVE] == 4
    assert ACTIVE in recovery._active_events_received_at


def test_records_already_seen_are_not_applied_twice() -> None:
    table = Table()
    recovery = Recovery(table)
    recovery.active_offsets[ACTIVE] = 1  # the persisted offset, or an earlier fetch
    apply_runs(recovery, [(ACTIVE, run((1, "a", "1"), (2, "a", "2")))])
    apply_runs(recovery, [(ACTIVE, run((2, "a", "2"), (3, "a", "3")))])  # read again
    assert table.applied == [(ACTIVE, 2), (ACTIVE, 3)]
    assert recovery.active_offsets[ACTIVE] == 3


def test_standby_runs_move_the_standby_offsets() -> None:
    table = Table()
    recovery = Recovery(table)
    assert apply_runs(recovery, [(STANDBY, run((0, "s", "1"), (2, "s", "2")))])
    assert recovery.standby_offsets[STANDBY] == 2
    assert recovery.active_offsets[ACTIVE] == -1
    assert table.state == {b"s": b"2"}
    note_standbys_ready(recovery)
    assert recovery.tables.standbys_ready


def test_a_partition_neither_active_nor_standby_is_not_applied() -> None:
    table = Table()
    recovery = Recovery(table)
    assert not apply_runs(recovery, [(REVOKED, run((0, "x", "1")))])
    assert table.applied == []


def test_events_faust_buffered_for_the_table_are_applied_first() -> None:
    table = Table()
    recovery = Recovery(table)
    (buffered,) = run((0, "a", "old"))
    event = type("Event", (), {"message": type("M", (), {"tp": ACTIVE, "offset": 0})()})()
    event.message.key, event.message.value = buffered.key, buffered.value
    recovery.buffers[table].append(event)
    apply_runs(recovery, [(ACTIVE, run((1, "a", "new")))])
    assert table.state == {b"a": b"new"}
    assert recovery.buffers[table] == []


async def waiting_for_the_end(recovery: Recovery) -> asyncio.Task[bool]:
    """A task waiting on the Recovery's end signal, as faust's Recovery does; returns once the
    task is waiting (it tells us in the same step that starts the wait)."""
    started = asyncio.Event()

    async def wait() -> bool:
        started.set()
        return await recovery.signal_recovery_end.wait()

    task = asyncio.create_task(wait())
    await started.wait()
    return task


async def test_the_end_wakes_the_waiting_recovery_and_leaves_nothing_set() -> None:
    recovery = Recovery(Table())
    waiting = await waiting_for_the_end(recovery)
    assert not end_recovery_if_done(recovery)  # offset -1, highwater 4
    recovery.active_offsets[ACTIVE] = 4
    assert end_recovery_if_done(recovery)
    assert await asyncio.wait_for(waiting, 1)
    assert not recovery.in_recovery
    assert recovery.flushed == 1
    # The next rebalance's wait must not find it set.
    assert not recovery.signal_recovery_end.is_set()
    assert not end_recovery_if_done(recovery)


class FetchedRecord(NamedTuple):
    offset: int
    key: bytes
    value: bytes | None


class Tables:
    def __init__(self, recovery: Recovery) -> None:
        self.recovery = recovery
        self.changelog_topics = {ACTIVE.topic}


class App:
    def __init__(self, recovery: Recovery) -> None:
        self.tables = Tables(recovery)
        self.consumer_generation_id = 1


class KafkaConsumer:
    """aiokafka's consumer, as far as positions go."""

    def __init__(self, positions: dict[TP, int]) -> None:
        self.positions = positions

    async def position(self, tp: TP) -> int:
        return self.positions[tp]


class Thread(ConsumerThread):
    def __init__(self, fetched: dict[TP, list[Any]], positions: dict[TP, int]) -> None:
        super().__init__(fetched, assigned=set(fetched), pause=set())
        self.consumer = KafkaConsumer(positions)

    def _ensure_consumer(self) -> KafkaConsumer:
        return self.consumer

    async def call_thread(self, fun: Any, *args: Any) -> Any:
        return await fun(*args)


def recovering_consumer(thread: Thread, recovery: Recovery, monkeypatch: Any) -> Any:
    monkeypatch.setattr("pipeline.engine.recovery.bulk_recoverable", lambda table: True)
    consumer = consumer_over(thread, {ACTIVE})
    consumer.bulk_recovery = True
    consumer.app = App(recovery)
    consumer.flow_active = True
    consumer._read_offset = defaultdict(lambda: None)
    return consumer


def fetched(first: int, last: int) -> list[FetchedRecord]:
    return [FetchedRecord(o, f"k{o % 3}".encode(), str(o).encode()) for o in range(first, last + 1)]


async def test_a_changelog_fetch_is_applied_and_ends_the_recovery(monkeypatch: Any) -> None:
    table = Table()
    recovery = Recovery(table)  # ACTIVE: highwater 4
    thread = Thread({ACTIVE: fetched(0, 4)}, positions={ACTIVE: 5})
    consumer = recovering_consumer(thread, recovery, monkeypatch)
    waiting = await waiting_for_the_end(recovery)
    handed_to_faust = await consumer._getmany({ACTIVE}, timeout=1.0)
    assert handed_to_faust == {}
    assert table.state == {b"k0": b"3", b"k1": b"4", b"k2": b"2"}
    assert await asyncio.wait_for(waiting, 1)
    assert not recovery.in_recovery
    assert consumer._read_offset[ACTIVE] == 4


async def test_a_partition_read_past_its_highwater_is_recovered(monkeypatch: Any) -> None:
    # Offsets 3 and 4: a record of an aborted transaction and its marker, never handed on.
    table = Table()
    recovery = Recovery(table)
    thread = Thread({ACTIVE: fetched(0, 2)}, positions={ACTIVE: 4})
    consumer = recovering_consumer(thread, recovery, monkeypatch)
    await consumer._getmany({ACTIVE}, timeout=1.0)
    assert recovery.active_offsets[ACTIVE] == 2
    assert recovery.in_recovery  # position 4: offset 4 (the highwater) is still to come
    thread.fetched = {}
    thread.consumer.positions[ACTIVE] = 5
    await consumer._getmany({ACTIVE}, timeout=1.0)
    assert recovery.active_offsets[ACTIVE] == 4
    assert not recovery.in_recovery
    assert table.applied == [(ACTIVE, 0), (ACTIVE, 1), (ACTIVE, 2)]


async def test_a_fetch_that_outlived_a_rebalance_is_left_to_faust(monkeypatch: Any) -> None:
    table = Table()
    recovery = Recovery(table)
    thread = Thread({ACTIVE: fetched(0, 4)}, positions={ACTIVE: 5})
    consumer = recovering_consumer(thread, recovery, monkeypatch)

    def rebalance() -> None:
        consumer.app.consumer_generation_id = 2

    thread.during_fetch = rebalance
    handed_to_faust = await consumer._getmany({ACTIVE}, timeout=1.0)
    # faust's getmany drops a fetch of an older generation; its Recovery seeks again.
    assert list(handed_to_faust) == [ACTIVE]
    assert table.applied == []
    assert recovery.in_recovery


async def test_nothing_ends_before_the_recovery_resumes_its_partitions(monkeypatch: Any) -> None:
    table = Table()
    recovery = Recovery(table)
    recovery.active_highwaters.clear()  # still being built: "nothing remaining" means nothing
    thread = Thread({}, positions={})
    consumer = recovering_consumer(thread, recovery, monkeypatch)
    consumer._active_partitions = {TP("quota.sessions", 0)}
    await consumer._getmany(consumer._active_partitions, timeout=1.0)
    assert recovery.in_recovery
