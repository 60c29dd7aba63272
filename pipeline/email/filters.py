"""Jinja2 filters the email templates use (pure): times, amounts, and keys fit for an inbox."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

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


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _field(data: Any, name: str) -> Any:
    return data.get(name) if isinstance(data, Mapping) else None


def person(data: Any, missing: str) -> str:
    """Whom a portal event is about: ``data.email``, else ``data.portal_developer.email``."""
    nested = _field(_field(data, "portal_developer"), "email")
    return _text(_field(data, "email")) or _text(nested) or missing


def catalogue_api(data: Any) -> str:
    """The API a key request is for: ``data.catalogue_entry.name``."""
    return _text(_field(_field(data, "catalogue_entry"), "name")) or "an API"


FILTERS = {
    "utc_time": utc_time,
    "amount": amount,
    "masked_key": masked_key,
    "person": person,
    "catalogue_api": catalogue_api,
}
