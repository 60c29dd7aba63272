"""Every fetched record of a partition we own reaches the agents, despite a race in faust.

faust hands its *live* set of active partitions to aiokafka's fetcher, which waits in the
consumer thread while faust keeps changing the set. aiokafka reads an empty set as "every
partition", and the set is empty for a moment when table recovery ends (faust pauses the
changelogs before it resumes the stream partitions). A fetch waiting then returns records of
still-paused stream partitions; faust drops them as not active, while aiokafka's position has
moved past them. faust counts on its seek to the committed offsets after recovery to read them
again, but aiokafka does not move a partition without a committed offset (a topic the group has
not committed on yet), so they were lost for good: the SIGKILL delivery test lost a whole
partition of triggers this way.

:class:`LosslessFetchConsumer` hands the fetcher a snapshot, and seeks back any partition whose
records faust would drop, so they are fetched again once it is resumed: never lost, never
handed to an agent twice.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

from faust.transport.drivers.aiokafka import Consumer as AIOKafkaDriverConsumer
from faust.types import TP


def put_back(
    records: Mapping[TP, Sequence[Any]], wanted: Collection[TP]
) -> tuple[dict[TP, Sequence[Any]], dict[TP, int]]:
    """Split a fetch into the records faust will hand on (those of ``wanted`` partitions) and,
    for every other partition, the offset to read it from again."""
    kept = {tp: batch for tp, batch in records.items() if tp in wanted}
    again = {tp: batch[0].offset for tp, batch in records.items() if tp not in wanted and batch}
    return kept, again


class LosslessFetchConsumer(AIOKafkaDriverConsumer):
    """faust's aiokafka consumer, without the fetch race."""

    async def _getmany(self, active_partitions: set[TP] | None, timeout: float) -> Any:
        if active_partitions is None:  # a client-only app reads everything
            return await super()._getmany(None, timeout)
        records = await super()._getmany(frozenset(active_partitions), timeout)  # type: ignore[arg-type]
        # What faust's getmany will yield, judged now: the fetch may have outlived a pause.
        wanted = self._get_active_partitions() | self._buffered_partitions
        kept, again = put_back(records, wanted)
        assigned = self.assignment()
        for tp, offset in again.items():
            if tp in assigned:  # a revoked partition is read by its new owner from the commit
                self._thread.seek(tp, offset)
        return kept
