"""pipeline.ops.chart: a period's usage as SVG coordinates, ticks and threshold lines."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jinja2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.ops.chart import Chart, ThresholdLine, Tick, usage_chart

#: 2025-11-28 12:00:00 UTC.
T0 = 1764331200.0
HOUR, DAY = 3600, 86400


def chart(points: list[tuple[float, int]], **overrides: Any) -> Chart:
    arguments: dict[str, Any] = {
        "period_start": T0,
        "period_end": T0 + HOUR,
        "quota_max": 1000,
        "thresholds": [50, 80],
        "fired": [],
        "now": T0 + HOUR,
    }
    return usage_chart(points, **(arguments | overrides))


def coordinates(polyline: str) -> list[tuple[float, float]]:
    pairs = [pair.split(",") for pair in polyline.split()]
    return [(float(x), float(y)) for x, y in pairs]


def labels(ticks: list[Tick]) -> list[str]:
    return [tick.label for tick in ticks]


# --- the line -------------------------------------------------------------------------------------


def test_points_scale_to_the_period_and_the_quota():
    result = chart([(T0, 0), (T0 + 900, 250), (T0 + 1800, 500), (T0 + HOUR, 1000)])

    assert (result.width, result.height) == (640, 220)
    assert result.polyline == "0.0,220.0 160.0,165.0 320.0,110.0 640.0,0.0"
    assert not result.empty
    assert result.y_max == 1000


def test_the_line_starts_at_zero_and_stays_flat_until_now():
    result = chart([(T0 + 900, 100), (T0 + 1800, 300)], now=T0 + 2700)

    assert coordinates(result.polyline) == [
        (0.0, 220.0),
        (160.0, 198.0),
        (320.0, 154.0),
        (480.0, 154.0),
    ]


def test_the_line_stops_at_the_period_end_when_now_is_past_it():
    result = chart([(T0 + 1800, 300)], now=T0 + 5 * HOUR)

    assert coordinates(result.polyline)[-1] == (640.0, 154.0)
    assert result.now_x is None


def test_the_line_is_not_extended_back_from_a_point_after_now():
    # Another worker's clock ran ahead: the point is drawn, nothing goes back to now.
    result = chart([(T0 + 1800, 300)], now=T0 + 900)

    assert coordinates(result.polyline) == [(0.0, 220.0), (320.0, 154.0)]
    assert result.now_x == 160.0


def test_coordinates_have_one_decimal():
    result = chart([(T0 + 1, 1), (T0 + 2, 3)], now=T0 + 2)

    assert result.polyline == "0.0,220.0 0.2,219.8 0.4,219.3"


def test_points_outside_the_period_are_clamped_to_its_edges():
    result = chart([(T0 - HOUR, 100), (T0 + 1800, 200), (T0 + 2 * HOUR, 300)], now=T0 + 3 * HOUR)

    assert coordinates(result.polyline) == [(0.0, 198.0), (320.0, 176.0), (640.0, 154.0)]


def test_points_out_of_order_are_drawn_in_time_order():
    result = chart([(T0 + 1800, 200), (T0 + 900, 100)], now=T0 + 1800)

    assert [x for x, _ in coordinates(result.polyline)] == [0.0, 160.0, 320.0]


def test_points_that_land_on_the_same_pixel_are_drawn_once():
    result = chart([(T0 - 20, 0), (T0 - 10, 0), (T0, 0), (T0 + HOUR, 10)])

    assert result.polyline == "0.0,220.0 640.0,217.8"


def test_usage_past_the_quota_raises_the_top_of_the_chart():
    result = chart([(T0 + 1800, 1250)], thresholds=[100])

    assert result.y_max == 1250
    assert coordinates(result.polyline)[1] == (320.0, 0.0)
    assert result.threshold_lines == [ThresholdLine(44.0, "100%", fired=False)]


def test_an_unlimited_quota_scales_to_the_peak_rounded_up_to_a_tick():
    result = chart([(T0 + 1800, 737)], quota_max=0)

    assert result.y_max == 800
    assert labels(result.y_ticks) == ["0", "200", "400", "600", "800"]
    assert result.threshold_lines == []  # nothing fires without a quota


def test_an_unlimited_quota_with_no_usage_still_has_an_axis():
    result = chart([(T0 + 1800, 0)], quota_max=-1)

    assert result.y_max == 1
    assert labels(result.y_ticks) == ["0", "1"]
    assert coordinates(result.polyline)[-1] == (640.0, 220.0)


def test_a_quota_that_never_renews_ends_the_axis_at_now():
    now = T0 + 10 * HOUR
    result = chart([(T0 + 5 * HOUR, 400)], period_end=None, now=now)

    assert coordinates(result.polyline) == [(0.0, 220.0), (320.0, 132.0), (640.0, 132.0)]
    assert result.now_x == 640.0


def test_an_infinite_period_end_is_a_quota_that_never_renews():
    never = chart([(T0 + 5 * HOUR, 400)], period_end=math.inf, now=T0 + 10 * HOUR)

    assert never == chart([(T0 + 5 * HOUR, 400)], period_end=None, now=T0 + 10 * HOUR)


def test_now_before_the_period_has_no_marker_and_a_degenerate_axis_draws_at_its_start():
    result = chart([(T0, 5)], period_end=None, now=T0 - 60)

    assert result.now_x is None
    assert result.x_ticks == []
    assert {x for x, _ in coordinates(result.polyline)} == {0.0}


def test_no_points_is_an_empty_chart_with_its_axes():
    result = chart([], now=T0 + 1800)

    assert result.empty
    assert result.polyline == ""
    assert result.now_x == 320.0
    assert labels(result.y_ticks)[-1] == "1,000"
    assert len(result.x_ticks) > 1
    assert len(result.threshold_lines) == 2


@pytest.mark.parametrize(("width", "height"), [(0, 220), (640, 0), (-1, -1)])
def test_a_chart_has_an_area(width, height):
    with pytest.raises(ValueError, match="pixels"):
        chart([], width=width, height=height)


def test_the_size_is_the_callers():
    result = chart([(T0 + HOUR, 1000)], width=100, height=50)

    assert (result.width, result.height) == (100, 50)
    assert coordinates(result.polyline)[-1] == (100.0, 0.0)


# --- thresholds ---------------------------------------------------------------------------------


def test_thresholds_are_lines_at_their_usage_marked_when_fired():
    result = chart([(T0 + 1800, 850)], thresholds=[80, 50, 100, 82.5, 80], fired=[50, 80])

    assert result.threshold_lines == [
        ThresholdLine(110.0, "50%", fired=True),
        ThresholdLine(44.0, "80%", fired=True),
        ThresholdLine(38.5, "82.5%", fired=False),
        ThresholdLine(0.0, "100%", fired=False),
    ]


def test_a_tiny_threshold_is_labelled_without_an_exponent():
    result = chart([], thresholds=[0.00001])

    assert labels_of(result.threshold_lines) == ["0.00001%"]


def labels_of(lines: list[ThresholdLine]) -> list[str]:
    return [line.label for line in lines]


# --- ticks ----------------------------------------------------------------------------------------


def test_an_hour_has_ticks_every_quarter_hour_in_utc():
    result = chart([])

    assert labels(result.x_ticks) == ["12:00", "12:15", "12:30", "12:45", "13:00"]
    assert [tick.position for tick in result.x_ticks] == [0.0, 160.0, 320.0, 480.0, 640.0]


def test_time_ticks_fall_on_round_times_inside_the_period():
    result = chart([], period_start=T0 + 7 * 60 + 13, period_end=T0 + 7 * 60 + 13 + HOUR)

    assert labels(result.x_ticks) == ["12:15", "12:30", "12:45", "13:00"]
    assert all(0 < tick.position < 640 for tick in result.x_ticks)


def test_a_day_has_hour_labels():
    result = chart([], period_end=T0 + DAY, now=T0)

    assert labels(result.x_ticks) == ["12:00", "18:00", "00:00", "06:00", "12:00"]


def test_two_days_still_have_hour_labels():
    result = chart([], period_end=T0 + 2 * DAY, now=T0)

    assert labels(result.x_ticks) == ["12:00", "00:00", "12:00", "00:00", "12:00"]


def test_a_period_over_two_days_has_dates_at_midnight_utc():
    result = chart([], period_end=T0 + 5 * DAY, now=T0)

    assert labels(result.x_ticks) == [
        "2025-11-29",
        "2025-11-30",
        "2025-12-01",
        "2025-12-02",
        "2025-12-03",
    ]


def test_a_month_has_a_few_dates_never_the_same_twice():
    result = chart([], period_end=T0 + 30 * DAY, now=T0)

    assert 3 <= len(result.x_ticks) <= 6
    assert len(set(labels(result.x_ticks))) == len(result.x_ticks)


def test_years_still_have_a_few_ticks():
    result = chart([], period_start=0.0, period_end=None, now=T0)

    assert 3 <= len(result.x_ticks) <= 6
    assert labels(result.x_ticks)[0] == "1970-01-01"


def test_a_few_minutes_have_minute_ticks():
    result = chart([], period_end=T0 + 300, now=T0)

    assert labels(result.x_ticks) == ["12:00", "12:01", "12:02", "12:03", "12:04", "12:05"]


@pytest.mark.parametrize(
    ("quota", "expected"),
    [
        (1000, ["0", "200", "400", "600", "800", "1,000"]),
        (10_000, ["0", "2,000", "4,000", "6,000", "8,000", "10,000"]),
        (5, ["0", "1", "2", "3", "4", "5"]),
        (3, ["0", "1", "2", "3"]),
        (1, ["0", "1"]),
        (12_500, ["0", "2,500", "5,000", "7,500", "10,000", "12,500"]),
        (1_000_000, ["0", "200,000", "400,000", "600,000", "800,000", "1,000,000"]),
        (7, ["0", "2", "4", "6"]),
    ],
)
def test_usage_ticks_are_round_integers_up_to_the_top(quota, expected):
    result = chart([], quota_max=quota)

    assert labels(result.y_ticks) == expected
    assert result.y_ticks[0].position == 220.0


def test_a_usage_tick_at_the_top_is_at_y_zero():
    assert chart([], quota_max=1000).y_ticks[-1] == Tick(0.0, "1,000")


# --- for the template -----------------------------------------------------------------------------


def plain(value: object) -> bool:
    if isinstance(value, list):
        return all(plain(item) for item in value)
    if isinstance(value, dict):
        return all(isinstance(key, str) and plain(item) for key, item in value.items())
    return value is None or type(value) in (str, float, int, bool)


def test_the_chart_holds_plain_types_only():
    result = chart([(T0 + 900, 100)], fired=[50])

    assert plain(dataclasses.asdict(result))
    assert type(result.now_x) is float


def test_the_chart_renders_in_a_template():
    template = jinja2.Environment(autoescape=True).from_string(
        '<svg viewBox="0 0 {{ c.width }} {{ c.height }}"><polyline points="{{ c.polyline }}"/>'
        "{% for t in c.threshold_lines %}"
        '<line y1="{{ t.y }}" class="{{ "fired" if t.fired }}"/><text>{{ t.label }}</text>'
        "{% endfor %}</svg>"
    )

    html = template.render(c=chart([(T0 + 1800, 500)], fired=[50]))

    assert '<polyline points="0.0,220.0 320.0,110.0 640.0,110.0"/>' in html
    assert '<line y1="110.0" class="fired"/><text>50%</text>' in html


# --- every coordinate in the plot area, whatever the input -------------------------------------


times = st.floats(allow_nan=False, allow_infinity=False)
realistic_times = st.floats(0, 4e9)
usages = st.integers(0, 2**63)


def inside(result: Chart) -> None:
    for x, y in coordinates(result.polyline):
        assert 0 <= x <= result.width
        assert 0 <= y <= result.height
    assert all(0 <= tick.position <= result.width for tick in result.x_ticks)
    assert all(0 <= tick.position <= result.height for tick in result.y_ticks)
    assert all(0 <= line.y <= result.height for line in result.threshold_lines)
    assert result.now_x is None or 0 <= result.now_x <= result.width
    assert "-" not in result.polyline  # not even -0.0
    assert len(result.x_ticks) <= 15
    assert len(result.y_ticks) <= 15


@settings(max_examples=400, deadline=None)
@given(
    time=st.sampled_from([times, realistic_times]).flatmap(
        lambda t: st.tuples(st.lists(st.tuples(t, usages), max_size=20), t, st.none() | t, t)
    ),
    quota_max=st.floats(allow_nan=False) | st.integers(-5, 10**12),
    thresholds=st.lists(st.floats(0.00001, 100), max_size=5),
    size=st.tuples(st.integers(1, 2000), st.integers(1, 2000)),
)
def test_every_coordinate_is_in_the_plot_area(time, quota_max, thresholds, size):
    points, period_start, period_end, now = time
    result = usage_chart(
        points,
        period_start=period_start,
        period_end=period_end,
        quota_max=quota_max,
        thresholds=thresholds,
        fired=thresholds[:1],
        now=now,
        width=size[0],
        height=size[1],
    )

    inside(result)
    assert result.empty is (not points)
    assert plain(dataclasses.asdict(result))


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_times_that_are_no_times_still_draw_inside(bad):
    for field in ("period_start", "period_end", "now"):
        inside(chart([(T0 + 1800, 10), (bad, 20)], **{field: bad}))
    inside(chart([(T0, 1)], quota_max=bad, thresholds=[50]))
