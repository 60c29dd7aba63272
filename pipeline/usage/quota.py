"""Quota periods and threshold crossing: the monitor's decisions, as pure functions.

A subject (a key or an org) has at most two periods kept: the current one and the previous one.
A period opens at the event time of the first record when none is open and lasts the renewal
rate (forever when the quota never renews); the first record at or after its end opens the next.
Each threshold fires once per period, when usage first reaches it; records of one call fire in
arrival order and, within a record, ascending. A late record counts towards the period it falls
in while that period is kept, and can only fire in that period; one that falls between the
previous period and the current one counts in the current one without firing; older ones are
not counted.
Nothing here reads a clock or does I/O.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple

NEVER = math.inf


@dataclass(frozen=True, slots=True)
class Limits:
    """What a subject's usage is measured against."""

    #: Requests allowed per period; <= 0 means unlimited (never fires).
    quota_max: float
    #: Seconds per period; <= 0 means the quota never renews (one period, forever).
    renewal_rate: float
    #: Percentages in (0, 100] that fire; empty means nothing to watch.
    thresholds: frozenset[float] = field(default_factory=frozenset)


@dataclass(frozen=True, slots=True)
class Period:
    """One quota period of one subject."""

    start: float
    #: Exclusive end; NEVER for a quota that does not renew.
    end: float
    usage: int = 0
    #: Thresholds already fired in this period.
    fired: frozenset[float] = frozenset()

    def holds(self, ts: float) -> bool:
        return self.start <= ts < self.end


@dataclass(frozen=True, slots=True)
class UsageState:
    """What the monitor keeps per subject: bounded to two periods."""

    current: Period | None = None
    previous: Period | None = None
    #: The ``since`` of the last hold of requests applied to this state (pipeline.usage.held): a
    #: session read again after a crash finds its held requests applied already.
    absorbed: float | None = None
    #: Orgs only: per partition of origin, the (offset, part) of the last partial applied
    #: (see pipeline.usage.partials): a partial read twice is applied once.
    origins: dict[str, list[int]] | None = None
    #: (event time, usage) points of the current period, times ascending, for a usage chart:
    #: sampled once per batch by pipeline.usage.series, never by apply_records.
    series: tuple[tuple[float, int], ...] = ()
    #: Keys only: the offset (in the key's partition of gateway.requests) of the last request
    #: applied to this state. Written with the state itself, it keeps a request read again from
    #: being counted again, however a crash split the batch's writes (pipeline.usage.keys).
    applied: int | None = None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "current": _period_to_json(self.current),
            "previous": _period_to_json(self.previous),
        }
        if self.absorbed is not None:
            data["absorbed"] = self.absorbed
        if self.origins:
            data["origins"] = self.origins
        if self.series:
            # Pairs are JSON arrays (orjson, as the tables encode): [[t, usage], ...].
            data["series"] = self.series
        if self.applied is not None:
            data["applied"] = self.applied
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> UsageState:
        series = data.get("series")
        return cls(
            _period_from_json(data.get("current")),
            _period_from_json(data.get("previous")),
            data.get("absorbed"),
            data.get("origins"),
            tuple(map(tuple, series)) if series else (),
            data.get("applied"),
        )

    @classmethod
    def from_stored(cls, data: dict[str, Any] | None) -> UsageState:
        """The state kept in a table, or a fresh one for a subject never seen."""
        return cls() if data is None else cls.from_json(data)


class Crossing(NamedTuple):
    """A threshold reached in a period: what a TriggerExceeded event reports."""

    threshold: float
    #: Usage of the period right after the record that reached the threshold.
    usage: int
    period_start: float
    period_end: float
    #: Event time of that record.
    ts: float


class Applied(NamedTuple):
    """The result of applying records to a subject's state."""

    state: UsageState
    crossings: list[Crossing]
    #: Requests too late for any kept period: not counted.
    dropped: int


def open_period(ts: float, limits: Limits) -> Period:
    """The period a record opens when no period is open at its time."""
    end = ts + limits.renewal_rate if limits.renewal_rate > 0 else NEVER
    return Period(start=ts, end=end)


def reached(period: Period, limits: Limits) -> list[float]:
    """Thresholds the period's usage has reached and that have not fired yet, ascending."""
    if limits.quota_max <= 0 or not limits.thresholds:
        return []
    scaled_usage = period.usage * 100
    fired = period.fired
    new = [
        threshold
        for threshold in limits.thresholds
        if scaled_usage >= threshold * limits.quota_max and threshold not in fired
    ]
    new.sort()
    return new


def _add(period: Period, count: int, ts: float, limits: Limits) -> tuple[Period, list[Crossing]]:
    # Once per record on the hottest path: the constructor, not dataclasses.replace (4x slower).
    period = Period(period.start, period.end, period.usage + count, period.fired)
    new = reached(period, limits)
    if not new:
        return period, []
    period = Period(period.start, period.end, period.usage, period.fired | frozenset(new))
    return period, [Crossing(t, period.usage, period.start, period.end, ts) for t in new]


def next_firing(period: Period | None, limits: Limits) -> float:
    """``usage * 100`` at which the period's next unfired threshold is reached (as
    :func:`reached` compares it); infinite when nothing more can fire."""
    if period is None or limits.quota_max <= 0:
        return NEVER
    unfired = [threshold for threshold in limits.thresholds if threshold not in period.fired]
    return min(unfired) * limits.quota_max if unfired else NEVER


def apply_records(
    state: UsageState, records: Iterable[tuple[float, int]], limits: Limits
) -> Applied:
    """Apply ``(ts, count)`` records, in arrival order, to a subject's usage state."""
    current, previous = state.current, state.previous
    crossings: list[Crossing] = []
    dropped = 0
    # Most records fall in the current period and reach no threshold: those are summed in
    # ``usage`` alone, without a Period per record (planning a batch of 20,000: 2.5 to 1.3 µs
    # a record).
    # ``usage`` is folded back into ``current`` before anything else reads it.
    usage = current.usage if current is not None else 0
    firing = next_firing(current, limits)
    for ts, count in records:
        if (
            current is not None
            and current.start <= ts < current.end
            and (usage + count) * 100 < firing
        ):
            usage += count
            continue
        if current is not None and usage != current.usage:
            current = Period(current.start, current.end, usage, current.fired)
        current, previous, fired, count_dropped = _apply_one(current, previous, ts, count, limits)
        crossings.extend(fired)
        dropped += count_dropped
        usage = current.usage
        firing = next_firing(current, limits)
    if current is not None and usage != current.usage:
        current = Period(current.start, current.end, usage, current.fired)
    # The series is left as it was: it is sampled once per batch, after this (series.sample).
    new = UsageState(current, previous, state.absorbed, state.origins, state.series, state.applied)
    return Applied(new, crossings, dropped)


def _apply_one(
    current: Period | None, previous: Period | None, ts: float, count: int, limits: Limits
) -> tuple[Period, Period | None, list[Crossing], int]:
    """One record, any case: (current, previous, crossings, requests dropped)."""
    fired: list[Crossing] = []
    if current is None or ts >= current.end:
        # Periods roll on the first record at or after the end, never on a clock.
        previous, current = current, open_period(ts, limits)
    if ts >= current.start:
        current, fired = _add(current, count, ts, limits)
    elif previous is not None and previous.holds(ts):
        previous, fired = _add(previous, count, ts, limits)
    elif previous is None or ts >= previous.end:
        # After every kept period but before the current one: the current period opened
        # on a record that overtook this one (an org's records come from many partitions).
        # It is counted there, and, being late, fires nothing itself.
        current = replace(current, usage=current.usage + count)
    else:
        return current, previous, fired, count
    return current, previous, fired, 0


def reset(state: UsageState) -> UsageState:
    """Close the current period now (Tyk resets a key's quota when the key is updated); the
    next period starts a fresh series."""
    if state.current is None:
        return replace(state, series=()) if state.series else state
    return replace(state, current=None, previous=state.current, series=())


def _period_to_json(period: Period | None) -> dict[str, Any] | None:
    if period is None:
        return None
    return {
        "start": period.start,
        "end": None if period.end == NEVER else period.end,
        "usage": period.usage,
        "fired": sorted(period.fired),
    }


def _period_from_json(data: dict[str, Any] | None) -> Period | None:
    if data is None:
        return None
    end = data["end"]
    return Period(
        start=data["start"],
        end=NEVER if end is None else end,
        usage=data["usage"],
        fired=frozenset(data["fired"]),
    )
