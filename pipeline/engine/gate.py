"""Batches and commits, never both at once: see pipeline.engine.transactions (2 and 6)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class BatchGate:
    """Many batches at once, or one commit; never both."""

    def __init__(self) -> None:
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._open = asyncio.Event()
        self._open.set()
        self._released = asyncio.Event()
        self._released.set()
        self._committing = asyncio.Lock()

    def hold(self) -> None:
        """Keep new batches out until :meth:`release` (while there is no transaction)."""
        self._released.clear()

    def release(self) -> None:
        self._released.set()

    @asynccontextmanager
    async def batch(self) -> AsyncIterator[None]:
        """Held while one batch is processed and acknowledged."""
        # Re-check after waking: a commit may have closed the gate again before we ran, and
        # nothing may await between this check and the count going up.
        while not (self._open.is_set() and self._released.is_set()):
            await self._open.wait()
            await self._released.wait()
        self._in_flight += 1
        self._idle.clear()
        try:
            yield
        finally:
            self._in_flight -= 1
            if self._in_flight == 0:
                self._idle.set()

    @asynccontextmanager
    async def commit(self) -> AsyncIterator[None]:
        """Held while offsets are computed and committed; waits for in-flight batches."""
        async with self._committing:
            self._open.clear()
            try:
                await self._idle.wait()
                yield
            finally:
                self._open.set()
