"""The ops page's templates (templates/ops) and the filters they use (pure but for loading).

Autoescaped: every value shown is text, and some (event ids, errors, org ids) come from
outside. Keys reach the templates masked already.
"""

from __future__ import annotations

import functools
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import jinja2

from pipeline.email.filters import amount
from pipeline.resources import templates_dir


def ago(seconds: float | None) -> str:
    """A duration, the way a person reads it at a glance: "4 s", "3 min", "2 h", "5 d"."""
    if seconds is None:
        return "never"
    seconds = max(0.0, seconds)
    for unit, size in (("d", 86_400), ("h", 3_600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f} {unit}"
    return f"{seconds:.0f} s" if seconds >= 1 else "now"


def clock(ts: float | None) -> str:
    """Unix seconds as "2026-12-03 14:05:09 UTC"."""
    if ts is None:
        return "never"
    try:
        moment = datetime.fromtimestamp(ts, tz=UTC)
    except (OverflowError, OSError, ValueError):
        # Outside the years a datetime holds (a time in milliseconds, NaN): shown as it is.
        return f"{ts:.0f}"
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def percent(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}%"


def path_part(text: str) -> str:
    """``text`` as one segment of a URL path: a "/" in an org id must not split it."""
    return quote(text, safe="")


@functools.cache
def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(templates_dir() / "ops"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,  # a field the view forgot fails the test, not the eye
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(ago=ago, clock=clock, percent=percent, amount=amount, path_part=path_part)
    return env


def render(template: str, **context: Any) -> str:
    return environment().get_template(template).render(**context)
