"""The ops page's usage chart (pure): a subject's usage over its quota period as SVG coordinates,
so that the page works with JavaScript off.

Everything is scaled to a plot area of ``width`` x ``height`` pixels, y growing downwards as in
SVG; the template puts the tick labels around it (its viewBox leaves the room) and does no
arithmetic. The chart holds plain types only (str, float, int, bool, lists of small frozen
records), and every coordinate lies in the plot area whatever the input: a point outside the
period is clamped to its edge.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from pipeline.usage.triggers import format_limit

WIDTH = 640
HEIGHT = 220
#: About this many intervals between ticks on each axis.
TICKS = 5
#: A longer period labels its time ticks with dates; a shorter one with HH:MM (UTC).
DATES_AFTER_SECONDS = 2 * 86400
_MINUTE, _HOUR, _DAY = 60, 3600, 86400
#: Steps between time ticks, in seconds; ticks fall on multiples of the step since the epoch, so
#: an hour step falls on the hour and a day step on midnight UTC.
TIME_STEPS = (
    *(n * _MINUTE for n in (1, 2, 5, 10, 15, 30)),
    *(n * _HOUR for n in (1, 2, 3, 6, 12)),
    *(n * _DAY for n in (1, 2, 7, 14, 28)),
)
#: Tick loops stop here: at float precision far from zero, adding a step may change nothing.
_MAX_TICKS = 3 * TICKS


@dataclass(frozen=True, slots=True)
class ThresholdLine:
    """A threshold's dashed horizontal line: where, its label ("80%"), and whether it fired in
    this period."""

    y: float
    label: str
    fired: bool


@dataclass(frozen=True, slots=True)
class Tick:
    """A labelled tick: ``position`` is x on the time axis, y on the usage axis."""

    position: float
    label: str


@dataclass(frozen=True, slots=True)
class Chart:
    """What the template draws."""

    width: int
    height: int
    #: SVG polyline points, "x1,y1 x2,y2 ...", one decimal; empty when there are no points.
    polyline: str
    threshold_lines: list[ThresholdLine]
    x_ticks: list[Tick]
    y_ticks: list[Tick]
    #: The "now" marker, None when now is outside the period shown.
    now_x: float | None
    #: No usage recorded in the period: the template says so instead of drawing a line.
    empty: bool
    #: The usage at the top of the plot area.
    y_max: int


def _clamp(value: float, low: float, high: float) -> float:
    # ``not value >= low`` catches NaN too; ``+ 0.0`` turns -0.0 into 0.0 ("-0.0" in the SVG).
    if not value >= low:
        return low
    return min(value, high) + 0.0


def _scale(value: float, low: float, high: float, size: int) -> float:
    """``value``'s distance in pixels from ``low`` on an axis of ``size`` pixels up to ``high``,
    clamped to the axis. A degenerate axis (no span, NaN) puts everything at its start."""
    span = high - low
    if not span > 0:
        return 0.0
    return _clamp((value - low) / span * size, 0.0, size)


def _finite_or(value: float | None, fallback: float) -> float:
    return value if value is not None and math.isfinite(value) else fallback


# --- the time axis ------------------------------------------------------------------------------


def _time_step(span: float, dates: bool) -> float:
    """Seconds between time ticks: the smallest step that keeps them about TICKS apart; days
    at least when the labels are dates, so no two ticks carry the same one."""
    for step in TIME_STEPS:
        if (step >= _DAY or not dates) and span / step <= TICKS:
            return step
    return _nice_step(span / TICKS / _DAY) * _DAY


def _time_label(ts: float, dates: bool) -> str:
    try:
        moment = datetime.fromtimestamp(ts, UTC)
    except (OverflowError, OSError, ValueError):
        # Outside the years a datetime holds: no real period gets here.
        return f"{ts:.0f}"
    return moment.strftime("%Y-%m-%d" if dates else "%H:%M")


def _time_ticks(start: float, end: float, width: int) -> list[Tick]:
    span = end - start
    if not (span > 0 and math.isfinite(span)):
        return []
    dates = span > DATES_AFTER_SECONDS
    step = _time_step(span, dates)
    # Float floor division: a ceiling that stays a float, however far the time is from zero.
    first = -(-start // step) * step
    ticks: list[Tick] = []
    for index in range(_MAX_TICKS):
        ts = first + index * step
        if ts > end:
            break
        position = round(_scale(ts, start, end, width), 1)
        if not ticks or position > ticks[-1].position:
            ticks.append(Tick(position, _time_label(ts, dates)))
    return ticks


# --- the usage axis -----------------------------------------------------------------------------


def _nice_step(raw: float) -> float:
    """The smallest of 1, 2, 2.5, 5 (times a power of ten) that is whole and at least ``raw``.

    A float, though whole: steps and ticks far beyond any real usage must not overflow.
    """
    if not raw > 1:
        return 1.0
    magnitude = 10.0 ** math.floor(math.log10(raw))
    for multiple in (1, 2, 2.5, 5):
        step = multiple * magnitude
        if step >= raw and step.is_integer():
            return step
    return 10 * magnitude


def _y_top(peak: float, quota_max: float) -> float:
    """Usage at the top of the plot: the quota (or the peak, when usage went past it), or for
    an unlimited quota the peak rounded up to a whole number of ticks."""
    if quota_max > 0 and math.isfinite(quota_max):
        return max(quota_max, peak)
    step = _nice_step(max(peak, 1) / TICKS)
    return math.ceil(max(peak, 1) / step) * step


def _usage_y(usage: float, top: float, height: int) -> float:
    return height - _scale(usage, 0.0, top, height)


def _usage_ticks(top: float, height: int) -> list[Tick]:
    step = _nice_step(top / TICKS)
    ticks = []
    for index in range(_MAX_TICKS):
        value = index * step
        if not value <= top:  # NaN too: 0 * an infinite step, past the largest float
            break
        ticks.append(Tick(round(_usage_y(value, top, height), 1), f"{int(value):,}"))
    return ticks


def _threshold_lines(
    thresholds: Sequence[float], fired: Sequence[float], quota_max: float, top: float, height: int
) -> list[ThresholdLine]:
    if not (quota_max > 0 and math.isfinite(quota_max)):
        # An unlimited quota fires nothing: its thresholds have no line to sit on.
        return []
    fired_set = set(fired)
    return [
        ThresholdLine(
            round(_usage_y(threshold / 100 * quota_max, top, height), 1),
            f"{format_limit(threshold)}%",
            threshold in fired_set,
        )
        for threshold in sorted({t for t in thresholds if math.isfinite(t)})
    ]


# --- the line -------------------------------------------------------------------------------------


def _series(
    points: Sequence[tuple[float, int]], period_start: float, end: float
) -> list[tuple[float, float]]:
    """The points to join: from zero at the period's start, flat after the last point to
    ``end`` (usage stays what it is until the next request)."""
    series = [(ts, float(usage)) for ts, usage in sorted(points, key=lambda point: point[0])]
    if series[0][0] > period_start:
        series.insert(0, (period_start, 0.0))
    last_ts, last_usage = series[-1]
    if end > last_ts:
        series.append((end, last_usage))
    return series


def _polyline(coordinates: list[tuple[float, float]]) -> str:
    pairs: list[str] = []
    for x, y in coordinates:
        pair = f"{x:.1f},{y:.1f}"
        # Points clamped to one edge, or closer than a tenth of a pixel, are drawn once.
        if not pairs or pairs[-1] != pair:
            pairs.append(pair)
    return " ".join(pairs)


def usage_chart(
    points: Sequence[tuple[float, int]],
    *,
    period_start: float,
    period_end: float | None,
    quota_max: float,
    thresholds: Sequence[float],
    fired: Sequence[float],
    now: float,
    width: int = WIDTH,
    height: int = HEIGHT,
) -> Chart:
    """The chart of one period's cumulative usage ``points`` ((unix time, usage), ascending).

    The time axis runs from ``period_start`` to ``period_end``, or to ``now`` for a quota that
    never renews (``period_end`` None). The usage axis runs from zero to ``quota_max``, or to
    the peak usage when the quota is unlimited (``quota_max`` <= 0) or was overrun.
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"a chart is at least 1x1 pixels, not {width}x{height}")
    axis_end = _finite_or(period_end, now)
    peak = max((float(usage) for _, usage in points), default=0.0)
    top = _y_top(max(peak, 0.0), quota_max)
    line_end = now if period_end is None else min(now, period_end)
    coordinates = (
        [
            (_scale(ts, period_start, axis_end, width), _usage_y(usage, top, height))
            for ts, usage in _series(points, period_start, line_end)
        ]
        if points
        else []
    )
    now_inside = period_start <= now <= axis_end and axis_end > period_start
    return Chart(
        width=width,
        height=height,
        polyline=_polyline(coordinates),
        threshold_lines=_threshold_lines(thresholds, fired, quota_max, top, height),
        x_ticks=_time_ticks(period_start, axis_end, width),
        y_ticks=_usage_ticks(top, height),
        now_x=round(_scale(now, period_start, axis_end, width), 1) if now_inside else None,
        empty=not points,
        y_max=math.ceil(top) if math.isfinite(top) else 0,
    )
