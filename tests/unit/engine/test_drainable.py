"""The producer a commit waits on: every message handed to ``send_soon`` must be settled."""

from __future__ import annotations

import asyncio

import pytest

from pipeline.engine.transactions import drainable


class RecordingProducer:
    """Stands in for faust's producer: ``send_soon`` only buffers, as faust's does."""

    def __init__(self) -> None:
        self.buffered: list[asyncio.Future[None]] = []

    def send_soon(self, fut: asyncio.Future[None]) -> None:
        self.buffered.append(fut)


async def test_drain_waits_for_every_buffered_write_acknowledged_or_failed():
    producer = drainable(RecordingProducer)()
    loop = asyncio.get_running_loop()
    first, second = loop.create_future(), loop.create_future()
    producer.send_soon(first)
    producer.send_soon(second)

    first.set_result(None)
    drained = asyncio.create_task(producer.drain())
    done_when_second_settled = []

    def refuse_second() -> None:
        # Runs after the drain's first step (callbacks run in the order they were scheduled).
        done_when_second_settled.append(drained.done())
        second.set_exception(RuntimeError("broker refused it"))

    loop.call_soon(refuse_second)
    await asyncio.wait_for(drained, timeout=5)
    assert done_when_second_settled == [False]
    assert producer.unacknowledged == set()
    with pytest.raises(RuntimeError):
        second.result()


async def test_drain_with_nothing_buffered_returns_at_once():
    producer = drainable(RecordingProducer)()
    await asyncio.wait_for(producer.drain(), timeout=1)
