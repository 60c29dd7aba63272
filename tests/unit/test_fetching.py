"""pipeline.fetching: what faust's fetch returns for a partition that is not active any more
is read again later, never dropped; the fetcher sees the partitions active when it was asked."""

from __future__ import annotations

from typing import Any, NamedTuple

from faust.types import TP

from pipeline.fetching import LosslessFetchConsumer, put_back

CHANGELOG = TP("app-usage-changelog", 0)
TRIGGERS = TP("quota.triggers", 1)
REQUESTS = TP("gateway.requests", 0)


class Record(NamedTuple):
    offset: int


def records(tp: TP, first: int, count: int) -> list[Record]:
    return [Record(offset) for offset in range(first, first + count)]


class ConsumerThread:
    """Stands in for faust's consumer thread. While its fetch waits, faust changes the set of
    active partitions, as when table recovery ends: the changelogs are paused and the stream
    partitions not resumed yet."""

    def __init__(self, fetched: dict[TP, list[Record]], assigned: set[TP], pause: set[TP]):
        self.fetched = fetched
        self.assigned = assigned
        self.pause = pause
        self.active: set[TP] = set()
        self.asked_for: list[Any] = []
        self.seeks: list[tuple[TP, int]] = []

    async def getmany(self, partitions: Any, timeout: float) -> dict[TP, list[Record]]:
        self.asked_for.append(None if partitions is None else set(partitions))
        self.active -= self.pause
        return dict(self.fetched)

    def assignment(self) -> set[TP]:
        return self.assigned

    def seek(self, tp: TP, offset: int) -> None:
        self.seeks.append((tp, offset))


def consumer_over(thread: ConsumerThread, active: set[TP], buffered: set[TP] = frozenset()):
    consumer = object.__new__(LosslessFetchConsumer)
    consumer._thread = thread  # type: ignore[assignment]
    consumer._active_partitions = active
    consumer._buffered_partitions = set(buffered)
    thread.active = active  # the same live set faust keeps changing
    return consumer


async def test_records_of_a_partition_paused_during_the_fetch_are_read_again() -> None:
    fetched = {CHANGELOG: records(CHANGELOG, 40, 3), TRIGGERS: records(TRIGGERS, 20, 63)}
    thread = ConsumerThread(fetched, assigned={CHANGELOG, TRIGGERS}, pause={CHANGELOG})
    active = {CHANGELOG}

    handed_on = await consumer_over(thread, active)._getmany(active, timeout=1.0)

    assert handed_on == {}
    # The fetcher saw the partitions active when it was asked, not the set emptied meanwhile
    # (aiokafka reads an empty set as "every partition").
    assert thread.asked_for == [{CHANGELOG}]
    assert sorted(thread.seeks) == sorted([(CHANGELOG, 40), (TRIGGERS, 20)])


async def test_records_of_active_and_buffered_partitions_are_handed_on() -> None:
    fetched = {REQUESTS: records(REQUESTS, 0, 5), TRIGGERS: records(TRIGGERS, 7, 2)}
    thread = ConsumerThread(fetched, assigned={REQUESTS, TRIGGERS}, pause=set())
    active = {REQUESTS}

    consumer = consumer_over(thread, active, buffered={TRIGGERS})
    handed_on = await consumer._getmany(active, timeout=1.0)

    assert handed_on == fetched
    assert thread.seeks == []


async def test_a_partition_revoked_meanwhile_is_left_to_its_new_owner() -> None:
    fetched = {TRIGGERS: records(TRIGGERS, 0, 4)}
    thread = ConsumerThread(fetched, assigned=set(), pause={TRIGGERS})
    active = {TRIGGERS}

    handed_on = await consumer_over(thread, active)._getmany(active, timeout=1.0)

    assert handed_on == {}
    assert thread.seeks == []


async def test_a_client_only_fetch_still_asks_for_every_partition() -> None:
    thread = ConsumerThread({}, assigned=set(), pause=set())
    await consumer_over(thread, set())._getmany(None, timeout=1.0)
    assert thread.asked_for == [None]


def test_put_back_keeps_the_wanted_and_rereads_the_rest_from_their_first_offset() -> None:
    fetched = {REQUESTS: records(REQUESTS, 3, 2), TRIGGERS: records(TRIGGERS, 9, 1), CHANGELOG: []}
    kept, again = put_back(fetched, {REQUESTS})
    assert kept == {REQUESTS: fetched[REQUESTS]}
    assert again == {TRIGGERS: 9}
