"""Requests held until their subject's session (or org record) arrives (pure).

A gateway counts only the requests of keys it knows, so every request has a session somewhere;
ours may simply not have read it yet (the sessions topic lags, or a worker starts with a fresh
app id on a backlog). So the requests of a key without a session are held, per second of event
time (each second's bucket keeps its earliest event time, as org partials do), and applied in
event-time order when the session comes: a key's usage counts whatever the order in which its
requests and its session arrive. Org partials wait for their org's record the same way.

Held requests are bounded (:class:`HoldPolicy`); what goes past a bound is dropped and counted
by reason:

- ``expired``: a subject's requests are held for ``seconds`` (wall clock) from the first one;
  when no session came by then they are dropped, and the next request starts a new hold.
- ``full``: at most ``max_subjects`` subjects are held per partition; the requests of one more
  are dropped.
- ``deleted``: a tombstone for the subject drops what is held for it.

What one subject holds is one table value, written again by every batch that adds to it, so it
is kept small: beyond ``max_buckets`` buckets its buckets are merged into coarser ones (10 s,
1 min, 10 min, 1 h, 1 day), each still stamped with its earliest event time. Held requests are
then placed in their quota periods to the second for the first 600 distinct seconds, and to
their bucket's earliest time after that.

Nothing here reads a clock or does I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

#: Held per-second buckets of one subject: second (a whole float) -> [earliest ts, count].
Buckets = dict[float, list[Any]]


@dataclass(frozen=True)
class HoldPolicy:
    """How much may be held, and for how long."""

    #: Seconds (wall clock) a subject's requests wait for its session from the first one held.
    seconds: float = 3600
    #: Subjects held at once in one partition.
    max_subjects: int = 10_000
    #: Buckets held for one subject before they are merged into coarser ones: each held entry
    #: (one table value, one changelog record per batch that adds to it) stays below 16 KB.
    max_buckets: int = 600


#: Bucket widths, in seconds, that a subject's held requests are merged into in turn.
GRAINS = (1.0, 10.0, 60.0, 600.0, 3600.0, 86400.0)


@dataclass
class Held:
    """What is held for one subject (one table value)."""

    #: When its first request was held (unix seconds, wall clock); also the hold's identity.
    since: float
    #: The partition it is held in (so that a scan of a memory store finds it).
    partition: int
    buckets: Buckets = field(default_factory=dict)
    #: Requests held (the buckets' counts summed).
    requests: int = 0
    #: For keys: the org the gateway named on the latest request.
    org_id: str = ""
    #: Seconds each bucket spans (GRAINS).
    grain: float = 1.0
    #: Keys only: the offset of the last request held (as UsageState.applied): one read again
    #: after a crash is not held twice.
    applied: int | None = None

    def expired(self, now: float, policy: HoldPolicy) -> bool:
        return now - self.since > policy.seconds

    def counts(self) -> list[tuple[float, int]]:
        """The held (ts, count) pairs in event-time order, as they are applied."""
        return sorted((ts, count) for ts, count in self.buckets.values())

    def add(self, ts: float, count: int, max_buckets: int) -> None:
        """Hold ``count`` requests of event time ``ts``."""
        grain = self.grain
        start = (ts // grain) * grain
        bucket = self.buckets.get(start)
        if bucket is None:
            if len(self.buckets) >= max_buckets and grain < GRAINS[-1]:
                self.coarsen()
                self.add(ts, count, max_buckets)
                return
            self.buckets[start] = [ts, count]
        else:
            if ts < bucket[0]:  # noqa: PLR1730 - as in partials: the rare late one
                bucket[0] = ts
            bucket[1] += count
        self.requests += count

    def coarsen(self) -> None:
        """Merge the buckets into the next grain's."""
        self.grain = next(grain for grain in GRAINS if grain > self.grain)
        merged: Buckets = {}
        for ts, count in self.buckets.values():
            start = (ts // self.grain) * self.grain
            bucket = merged.get(start)
            if bucket is None:
                merged[start] = [ts, count]
            else:
                bucket[0] = min(bucket[0], ts)
                bucket[1] += count
        self.buckets = merged

    def to_json(self) -> dict[str, Any]:
        return {
            "since": self.since,
            "partition": self.partition,
            "buckets": self.counts(),
            "requests": self.requests,
            "org_id": self.org_id,
            "grain": self.grain,
            **({"applied": self.applied} if self.applied is not None else {}),
        }

    @classmethod
    def from_stored(cls, data: Mapping[str, Any] | None) -> Held | None:
        if data is None:
            return None
        grain = data.get("grain", 1.0)
        buckets: Buckets = {}
        for ts, count in data["buckets"]:
            buckets[(ts // grain) * grain] = [ts, count]
        return cls(
            since=data["since"],
            partition=data["partition"],
            buckets=buckets,
            requests=data["requests"],
            org_id=data.get("org_id", ""),
            grain=grain,
            applied=data.get("applied"),
        )


@dataclass
class HoldTally:
    """What one batch did to the held requests of one partition (for the ledger and metrics)."""

    #: Change in subjects and requests held.
    subjects: int = 0
    requests: int = 0
    #: Requests applied because their subject's session came.
    released: int = 0
    #: Requests dropped, by reason: expired, full, deleted.
    dropped: dict[str, int] = field(default_factory=dict)

    def drop(self, reason: str, requests: int) -> None:
        if requests:
            self.dropped[reason] = self.dropped.get(reason, 0) + requests

    def forget(self, held: Held, reason: str | None) -> None:
        """``held`` leaves the store: dropped for ``reason``, or released when None."""
        self.subjects -= 1
        self.requests -= held.requests
        if reason is None:
            self.released += held.requests
        else:
            self.drop(reason, held.requests)


class Room:
    """How many more subjects a partition may hold in this batch."""

    def __init__(self, free: int) -> None:
        self.free = free

    def take(self) -> bool:
        if self.free <= 0:
            return False
        self.free -= 1
        return True


def hold(
    held: Held | None,
    counts: Iterable[tuple[float, int]],
    *,
    now: float,
    partition: int,
    policy: HoldPolicy,
    room: Room,
    tally: HoldTally,
) -> Held | None:
    """``held`` with ``counts`` added; None when nothing can be held. Counts the change, and
    what was dropped, in ``tally``."""
    if held is not None and held.expired(now, policy):
        tally.forget(held, "expired")
        held = None
    if held is None:
        if not room.take():
            tally.drop("full", sum(count for _, count in counts))
            return None
        held = Held(since=now, partition=partition)
        tally.subjects += 1
    for ts, count in counts:
        held.add(ts, count, policy.max_buckets)
        tally.requests += count
    return held


@dataclass
class PartitionHeld:
    """What one partition holds, as last counted."""

    subjects: int = 0
    requests: int = 0
    #: When it was last swept (wall clock), and in which epoch of its agent's feed.
    swept_at: float = 0.0
    epoch: int = -1


class HeldLedger:
    """Per partition, what is held: counted by a sweep of the held table, then kept up to date
    by each batch's tally. A rebalance (a new epoch of the feed) makes every count stale."""

    def __init__(self, sweep_every: float) -> None:
        self.sweep_every = sweep_every
        self._partitions: dict[int, PartitionHeld] = {}

    def needs_sweep(self, partition: int, now: float, epoch: int) -> bool:
        known = self._partitions.get(partition)
        return known is None or known.epoch != epoch or now - known.swept_at >= self.sweep_every

    def swept(self, partition: int, counted: PartitionHeld) -> None:
        self._partitions[partition] = counted

    def room(self, partition: int, policy: HoldPolicy) -> Room:
        known = self._partitions.get(partition)
        return Room(policy.max_subjects - (known.subjects if known is not None else 0))

    def add(self, partition: int, tally: HoldTally) -> None:
        known = self._partitions.get(partition)
        if known is not None:
            known.subjects = max(known.subjects + tally.subjects, 0)
            known.requests = max(known.requests + tally.requests, 0)

    def totals(self) -> tuple[int, int]:
        """Subjects and requests held in every partition counted."""
        held = self._partitions.values()
        return sum(p.subjects for p in held), sum(p.requests for p in held)


def sweep(
    entries: Iterable[tuple[str, Mapping[str, Any]]],
    *,
    now: float,
    epoch: int,
    policy: HoldPolicy,
    tally: HoldTally,
) -> tuple[list[str], PartitionHeld]:
    """The held entries of one partition, judged at ``now``: the subjects whose hold has
    expired (to delete; counted in ``tally``), and what stays held."""
    expired: list[str] = []
    counted = PartitionHeld(swept_at=now, epoch=epoch)
    for subject, stored in entries:
        held = Held.from_stored(stored)
        if held is None:
            continue
        if held.expired(now, policy):
            expired.append(subject)
            tally.drop("expired", held.requests)
        else:
            counted.subjects += 1
            counted.requests += held.requests
    return expired, counted
