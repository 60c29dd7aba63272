"""Jinja2 filters the email templates use (pure): times, amounts, and keys fit for an inbox."""

from __future__ import annotations

from datetime import UTC, datetime

#: Characters of a key an email shows: enough to tell keys apart, too few to use one.
KEY_TAIL = 4


def utc_time(ts: float) -> str:
    """Unix seconds as "2026-11-28 14:00 UTC"."""
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%d %H:%M UTC")


def amount(value: float) -> str:
    """A count with thousands separators, whole numbers without a trailing ".0"."""
    if float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:,}"


def masked_key(key: str) -> str:
    """The key's last characters only: an email is no place for a working credential."""
    if len(key) <= 2 * KEY_TAIL:
        return "…"
    return "…" + key[-KEY_TAIL:]


FILTERS = {"utc_time": utc_time, "amount": amount, "masked_key": masked_key}
