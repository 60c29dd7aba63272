"""A small bounded series of (time, cumulative usage) points of a subject's current period, for
the operator page's usage chart (pure).

The period is cut into :data:`SAMPLES` buckets of equal length (a period that never ends into
buckets of :data:`NEVER_BUCKET` seconds, of which the last :data:`SAMPLES` points are kept), and
the series keeps at most one point per bucket: the usage at the latest event time seen in it.
Points are added once per subject per batch, after the batch is applied (never per record);
their times ascend and their usages never decrease; only points of the current period are kept,
so a new period starts a fresh series.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from pipeline.usage.quota import NEVER, Period, UsageState

#: Points at most per period.
SAMPLES = 24
#: Seconds per bucket of a period that never ends.
NEVER_BUCKET = 3600.0

Point = tuple[float, int]
Series = tuple[Point, ...]


def sampled(series: Series, period: Period, ts: float, usage: int) -> Series:
    """``series`` after a batch left ``period``'s usage at ``usage``, the batch's latest event
    time being ``ts``.

    A point in the same bucket as the last one replaces it (the later time, the new usage); a
    ``ts`` before the last point's time (late records) updates that point's usage only; an
    unchanged usage adds nothing. Points outside ``period`` are dropped, as are (they cannot be
    of this period) points above ``usage``.
    """
    # Once per subject per batch on the usage stage's path: the common case (a point in the
    # last point's bucket, or the next one) first, in as few steps as it takes.
    start, end = period.start, period.end
    if series:
        last, last_usage = series[-1]
        if series[0][0] < start or last >= end or last_usage > usage:  # not all of this period
            kept = tuple(point for point in series if start <= point[0] < end and point[1] <= usage)
            return sampled(kept, period, ts, usage)
        if last_usage == usage:
            return series
        if ts <= last:  # late records: the time stays
            return (*series[:-1], (last, usage))
    elif usage <= 0:
        return series
    at = start if ts < start else ts if ts < end else _last_moment(end)
    if series:
        if end == NEVER:
            same = (at - start) // NEVER_BUCKET == (last - start) // NEVER_BUCKET
        else:
            width = (end - start) / SAMPLES
            bucket = (last - start) // width
            # (at > last; the last bucket ends with the period, whatever the rounding.)
            same = (at - start) // width == bucket or bucket >= SAMPLES - 1
        if same:
            return (*series[:-1], (at, usage))
    # Only a period that never ends has more buckets than samples: its oldest points go.
    return (*series, (at, usage))[-SAMPLES:]


def _last_moment(end: float) -> float:
    """The latest time within a period that ends at ``end``."""
    return math.nextafter(end, -math.inf)


def sample(state: UsageState, records: Sequence[tuple[float, int]]) -> UsageState:
    """``state`` with its current period's usage after ``records`` (the ``(ts, count)`` records
    just applied to it) sampled into its series."""
    current = state.current
    if current is None or not records:
        return state
    series = sampled(state.series, current, max(records)[0], current.usage)
    if series is state.series:
        return state
    return UsageState(current, state.previous, state.absorbed, state.origins, series, state.applied)


def sampled_json(state: UsageState, records: Sequence[tuple[float, int]]) -> dict[str, Any]:
    """``sample(state, records).to_json()`` without the state in between: the key planner's
    path, once per key per batch (a UsageState costs as much to make as sampling does)."""
    data = state.to_json()
    current = state.current
    if current is not None and records:
        series = sampled(state.series, current, max(records)[0], current.usage)
        if series:
            data["series"] = series
        else:
            data.pop("series", None)
    return data
