"""pipeline.fetching: faust's fetch must not see partitions paused or resumed while it waits."""

from __future__ import annotations

from typing import Any

from faust.types import TP

from pipeline.fetching import LosslessFetchConsumer


class WaitingFetch:
    """Stands in for faust's consumer thread: while the fetch waits, faust changes its set of
    active partitions (as when table recovery ends and the changelogs are paused)."""

    def __init__(self, active: set[TP]) -> None:
        self.active = active
        self.asked_for: list[Any] = []

    async def getmany(self, partitions: Any, timeout: float) -> dict[TP, list[Any]]:
        self.active.clear()
        self.asked_for.append(None if partitions is None else set(partitions))
        return {}


def consumer_over(fetch: WaitingFetch) -> LosslessFetchConsumer:
    consumer = object.__new__(LosslessFetchConsumer)
    consumer._thread = fetch  # type: ignore[assignment]
    return consumer


async def test_the_fetch_keeps_the_partitions_active_when_it_was_asked() -> None:
    changelogs = {TP("app-table-changelog", 0), TP("app-table-changelog", 1)}
    active = set(changelogs)
    fetch = WaitingFetch(active)

    await consumer_over(fetch)._getmany(active, timeout=1.0)

    # aiokafka reads an empty set as "every partition": the live set, emptied while the fetch
    # waited, would have let it hand back records of partitions faust then drops.
    assert fetch.asked_for == [changelogs]
    assert active == set()


async def test_a_client_only_fetch_still_asks_for_every_partition() -> None:
    fetch = WaitingFetch(set())
    await consumer_over(fetch)._getmany(None, timeout=1.0)
    assert fetch.asked_for == [None]
