"""One worker's snapshot for the ops page: the subjects nearest their quota in its partitions,
its agents' latest batches, its consumer lag, and its deliveries.

Reading the usage tables means going over every subject this worker holds: the scan gives the
event loop back every few thousand values (the agents keep running while a page is built),
and a snapshot is reused for a few seconds (a page refreshing itself on several screens scans
once).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from itertools import islice
from typing import Any

from pipeline import __version__
from pipeline.ops.nearest import key_row, nearest, org_row
from pipeline.wiring import Pipeline

#: Values read between two yields to the event loop.
SCAN_SLICE = 2_000
#: Seconds a snapshot is reused.
FRESH_FOR = 3.0

#: (now) -> this worker's deliveries: pipeline.delivery.activity's snapshot.
DeliveriesView = Callable[[float], dict[str, Any]]


class WorkerSnapshots:
    """Builds (and briefly keeps) this worker's snapshot."""

    def __init__(self, pipeline: Pipeline, deliveries: DeliveriesView, secret: bytes) -> None:
        self._pipeline = pipeline
        self._deliveries = deliveries
        self._secret = secret
        self._kept: tuple[float, dict[str, Any]] | None = None
        self._building: asyncio.Task[dict[str, Any]] | None = None

    async def get(self) -> dict[str, Any]:
        now = time.time()
        if self._kept is not None and now - self._kept[0] < FRESH_FOR:
            return self._kept[1]
        if self._building is None or self._building.done():
            # One scan at a time, however many pages ask at once.
            self._building = asyncio.create_task(self._build())
        snapshot = await asyncio.shield(self._building)
        self._kept = (time.time(), snapshot)
        return snapshot

    async def _build(self) -> dict[str, Any]:
        pipeline = self._pipeline
        engine, tables, monitor = pipeline.engine, pipeline.tables, pipeline.settings.monitor
        now = time.time()

        def keys() -> Iterator[dict[str, Any] | None]:
            for key, usage in tables.key_usage.scan_actives():
                session = tables.sessions.get(key)
                if isinstance(session, dict):
                    yield shown(key_row, key, session, usage, secret=self._secret)

        def orgs() -> Iterator[dict[str, Any] | None]:
            for org, usage in tables.org_usage.scan_actives():
                stored = tables.orgs.get(org)
                if isinstance(stored, dict):
                    yield shown(org_row, org, stored, usage)

        def shown(row: Callable[..., dict[str, Any] | None], *args: Any, **kw: Any) -> Any:
            # A stored value that does not read (another version's) leaves its subject out,
            # not the panel.
            try:
                return row(*args, monitor=monitor, now=now, **kw)
            except (KeyError, TypeError, ValueError):
                return None

        lags = await engine.lags()
        return {
            "worker": engine.own_url(),
            "version": __version__,
            "at": now,
            "keys": await _top(keys()),
            "orgs": await _top(orgs()),
            "agents": engine.activity.snapshot(now),
            "lags": [
                {"topic": topic, "partition": partition, "lag": lag}
                for (topic, partition), lag in sorted(lags.items())
            ],
            "deliveries": self._deliveries(now),
        }


async def _top(rows: Iterator[dict[str, Any] | None]) -> list[dict[str, Any]]:
    """The nearest rows of all, a slice at a time: the event loop is given back between
    slices, and no more than a slice is held (a worker may hold a million keys)."""
    best: list[dict[str, Any]] = []
    while True:
        chunk = list(islice(rows, SCAN_SLICE))
        if not chunk:
            return best
        best = nearest([*best, *chunk])
        await asyncio.sleep(0)  # let the agents run between slices of the scan
