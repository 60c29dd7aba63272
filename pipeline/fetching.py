"""Reading every record of a partition once it is ours, despite two holes in faust's fetching.

1. faust hands its *live* set of active partitions to aiokafka's fetcher, which waits in the
   consumer thread while faust keeps changing the set. aiokafka reads an empty set as "every
   partition", and the set is empty for a moment when table recovery ends (faust pauses the
   changelogs before it resumes the stream partitions). A fetch waiting then returns records
   of the still-paused stream partitions; faust drops them as not active, but aiokafka's
   position has moved past them. :meth:`LosslessFetchConsumer._getmany` hands over a snapshot.
2. faust relies on seeking every partition to its committed offset after recovery to re-read
   whatever it dropped, but aiokafka's ``seek_to_committed`` leaves alone a partition whose
   committed offset is unset or 0, the usual state of a topic a group has not committed on
   yet (a worker that crashed before its first commit). Those records were lost for good: the
   SIGKILL delivery test lost a whole partition of triggers this way. :func:`rewind_uncommitted`
   moves such partitions where the reset policy says, as aiokafka does on a fresh assignment.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from faust.transport.drivers.aiokafka import Consumer as AIOKafkaDriverConsumer
from faust.types import TP


async def rewind_uncommitted(
    consumer: AIOKafkaConsumer,
    committed: Mapping[TopicPartition, int | None],
    reset_policy: str,
) -> list[TopicPartition]:
    """After ``consumer.seek_to_committed()``: seek the partitions it did not move (committed
    offset unset or 0) to where a fresh assignment would start; returns them."""
    at_zero = [tp for tp, offset in committed.items() if offset == 0]
    unset = [tp for tp, offset in committed.items() if offset is None]
    for tp in at_zero:
        consumer.seek(tp, 0)
    if unset and reset_policy == "earliest":
        await consumer.seek_to_beginning(*unset)
    elif unset and reset_policy == "latest":
        await consumer.seek_to_end(*unset)
    return at_zero + unset


class LosslessFetchConsumer(AIOKafkaDriverConsumer):
    """faust's aiokafka consumer, with both holes closed."""

    async def _getmany(self, active_partitions: set[TP] | None, timeout: float) -> Any:
        snapshot = None if active_partitions is None else frozenset(active_partitions)
        return await super()._getmany(snapshot, timeout)  # type: ignore[arg-type]

    async def seek_to_committed(self) -> Mapping[TP, int]:
        # aiokafka's consumer lives in faust's consumer thread, so the seeks run there.
        thread = self._thread
        consumer: AIOKafkaConsumer = thread._ensure_consumer()
        reset_policy = self.app.conf.consumer_auto_offset_reset

        async def seek() -> Mapping[TP, int]:
            committed = await consumer.seek_to_committed()
            await rewind_uncommitted(consumer, committed, reset_policy)
            return committed  # type: ignore[no-any-return]

        return await thread.call_thread(seek)  # type: ignore[no-any-return]
