"""The gate that keeps commits between whole batches, and batches out while there is no
transaction."""

from __future__ import annotations

import asyncio

from pipeline.engine.gate import BatchGate


async def enter(gate: BatchGate, entered: list[str], name: str) -> None:
    async with gate.batch():
        entered.append(name)


async def test_a_commit_waits_for_the_batch_in_flight_and_holds_new_ones_back() -> None:
    gate = BatchGate()
    order: list[str] = []
    in_batch = asyncio.Event()
    finish_batch = asyncio.Event()

    async def batch() -> None:
        async with gate.batch():
            in_batch.set()
            await finish_batch.wait()
            order.append("batch")

    async def commit() -> None:
        async with gate.commit():
            order.append("commit")

    first = asyncio.create_task(batch())
    await in_batch.wait()
    committing = asyncio.create_task(commit())
    later = asyncio.create_task(enter(gate, order, "later batch"))
    done, _ = await asyncio.wait({committing, later}, timeout=0.05)
    assert not done

    finish_batch.set()
    async with asyncio.timeout(5):
        await asyncio.gather(first, committing, later)
    assert order == ["batch", "commit", "later batch"]


async def test_a_held_gate_lets_no_batch_in_until_released() -> None:
    gate = BatchGate()
    entered: list[str] = []
    gate.hold()
    waiting = asyncio.create_task(enter(gate, entered, "batch"))
    done, _ = await asyncio.wait({waiting}, timeout=0.05)
    assert not done
    assert entered == []

    gate.release()

    async with asyncio.timeout(5):
        await waiting
    assert entered == ["batch"]
