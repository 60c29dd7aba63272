"""When each agent last worked, and how long its batches take: what an operator asks first of
a worker that seems stuck ("is it still reading?").

The engine times every batch of a bulk agent and every record of a per-record agent, and tells
the listeners (the service layer's metrics) as it goes; the latest of each is kept here for the
ops page. A clock read and a dict write per batch: nothing per record of a bulk agent.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple, TypeVar

T = TypeVar("T")

#: Told of each batch: (agent, seconds it took, unix time it ended).
BatchListener = Callable[[str, float, float], None]


class AgentSeen(NamedTuple):
    """An agent's latest batch."""

    #: Unix time at which it ended.
    at: float
    #: Seconds it took.
    seconds: float
    #: Batches (or records, for a per-record agent) since the worker started.
    batches: int


class AgentActivity:
    """The latest batch of each agent of this worker."""

    def __init__(self) -> None:
        self.seen: dict[str, AgentSeen] = {}
        self._listeners: list[BatchListener] = []

    def listen(self, listener: BatchListener) -> None:
        self._listeners.append(listener)

    def observe(self, agent: str, seconds: float, at: float) -> None:
        before = self.seen.get(agent)
        self.seen[agent] = AgentSeen(at, seconds, before.batches + 1 if before else 1)
        for listener in self._listeners:
            listener(agent, seconds, at)

    def timed(
        self, agent: str, handle: Callable[[T], Awaitable[None]]
    ) -> Callable[[T], Awaitable[None]]:
        """``handle``, observed each time it returns (a failure is no batch done)."""

        async def observed(argument: T) -> None:
            started = time.perf_counter()
            await handle(argument)
            self.observe(agent, time.perf_counter() - started, time.time())

        return observed

    def snapshot(self, now: float) -> dict[str, dict[str, Any]]:
        """Per agent: seconds since its last batch, that batch's duration, and the count."""
        return {
            agent: {
                "ago": max(0.0, now - seen.at),
                "seconds": seen.seconds,
                "batches": seen.batches,
            }
            for agent, seen in sorted(self.seen.items())
        }
