"""The keys and orgs nearest their quota (pure): rows from stored states, the top of one
worker's partitions, and the top of the whole group from every worker's.

A key leaves its worker masked, never raw: the rows travel between workers and reach the page.
Its ``ref`` (a keyed hash) tells two workers' rows of the same key apart from two keys with
the same mask (a memory store keeps standby partitions alongside the active ones).
"""

from __future__ import annotations

import hashlib
import heapq
import hmac
from collections.abc import Iterable
from typing import Any

from pipeline.config import MonitorConfig
from pipeline.email.filters import masked_key
from pipeline.service.api_rules import key_quota, org_quota

#: Rows each panel shows.
TOP = 20


def key_ref(key: str, secret: bytes) -> str:
    """A key's stable, unreadable name across workers."""
    return hmac.new(secret, key.encode(), hashlib.sha256).hexdigest()[:20]


def key_row(
    key: str,
    session: dict[str, Any],
    usage: dict[str, Any] | None,
    *,
    monitor: MonitorConfig,
    now: float,
    secret: bytes,
) -> dict[str, Any] | None:
    """A key's row (masked), or None when nothing is counted against a limit in an open
    period."""
    view = key_quota(key, session, usage, monitor=monitor, now=now)
    view["key"] = masked_key(key)
    return _counting(view, key_ref(key, secret))


def org_row(
    org: str,
    stored: dict[str, Any],
    usage: dict[str, Any] | None,
    *,
    monitor: MonitorConfig,
    now: float,
) -> dict[str, Any] | None:
    """An org's row, or None when nothing is counted against a limit in an open period."""
    return _counting(org_quota(org, stored, usage, monitor=monitor, now=now), org)


def _counting(view: dict[str, Any], ref: str) -> dict[str, Any] | None:
    if view["usage_percentage"] is None or view["period_start"] is None:
        return None
    view["ref"] = ref
    return view


def nearest(rows: Iterable[dict[str, Any] | None], top: int = TOP) -> list[dict[str, Any]]:
    """The ``top`` rows of highest usage percentage, highest first; one row per ``ref`` (the
    most used, should two workers both hold it)."""
    best: dict[str, dict[str, Any]] = {}
    for row in rows:
        if row is None:
            continue
        held = best.get(row["ref"])
        if held is None or row["usage"] > held["usage"]:
            best[row["ref"]] = row
    return heapq.nlargest(
        top, best.values(), key=lambda row: (row["usage_percentage"], row["usage"], row["ref"])
    )
