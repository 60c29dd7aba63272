"""The HTTP API's decisions (pure): who may call, what a body becomes, what a stored usage
looks like. The pages are in pipeline.service.api."""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from typing import Any, NamedTuple

import orjson
from pydantic import SecretStr

from pipeline.config import MonitorConfig
from pipeline.portal.events import decode_portal_event
from pipeline.records.checks import decode_json_object
from pipeline.records.subjects import decode_org, decode_session
from pipeline.usage.quota import NEVER, Limits, UsageState
from pipeline.usage.triggers import format_limit, usage_percentage
from pipeline.usage.watching import org_limits, watched_key

#: Larger request bodies are refused (413): a session or an event is a few KiB at most.
MAX_BODY_BYTES = 1 << 20
API_DISABLED = "the HTTP API is disabled: set web.token (QP_WEB_TOKEN)"


class Refusal(NamedTuple):
    """Why a request may not use the API, as the response that says so."""

    status: int
    error: str
    headers: Mapping[str, str]


def authorize(authorization: str | None, token: SecretStr | None) -> Refusal | None:
    """None when the ``Authorization`` header carries the configured bearer token."""
    expected = token.get_secret_value() if token is not None else ""
    if not expected:
        # An empty token would admit "Bearer " from anyone: treat it as no token at all.
        return Refusal(403, API_DISABLED, {})
    scheme, _, presented = (authorization or "").strip().partition(" ")
    if scheme.lower() != "bearer" or not presented.strip():
        return Refusal(401, "missing bearer token", {"WWW-Authenticate": "Bearer"})
    # Bytes, not str: compare_digest refuses non-ASCII str, and a client may send anything.
    if not hmac.compare_digest(presented.strip().encode(), expected.encode()):
        return Refusal(
            401, "invalid bearer token", {"WWW-Authenticate": 'Bearer error="invalid_token"'}
        )
    return None


class Record(NamedTuple):
    """One record to publish: key and value bytes; a None value is a tombstone."""

    key: bytes
    value: bytes | None


def portal_record(body: bytes, default_id: str) -> tuple[str, Record]:
    """A portal event's id and its record; InvalidRecord says what is wrong with the body.

    The value is the body with ``id`` set, so the webhook-id of its deliveries is the id we
    answered. A client that sets ``id`` itself can retry without the event going out twice.
    """
    event = decode_portal_event(body, default_id=default_id)
    value = {**decode_json_object(body), "id": event.id}
    return event.id, Record(event.org_id.encode(), orjson.dumps(value))


def session_record(key: str, body: bytes | None) -> Record:
    """A session record (None body: a tombstone), published as received once it validates."""
    decode_session(body)
    return Record(key.encode(), body)


def org_record(org: str, body: bytes | None) -> Record:
    """An org record (None body: a tombstone), published as received once it validates."""
    decode_org(body)
    return Record(org.encode(), body)


def _plain_number(value: float) -> float | int:
    return int(value) if value == int(value) else value


def usage_view(stored: dict[str, Any] | None, limits: Limits, now: float) -> dict[str, Any]:
    """What a dashboard sees of a subject's stored usage state at ``now``.

    A period that has ended by ``now`` is shown as none open: periods roll only on the next
    record, which will open a fresh one, so its usage no longer counts against the quota.
    """
    period = UsageState.from_stored(stored).current
    if period is not None and now >= period.end:
        period = None
    usage = period.usage if period is not None else 0
    unlimited = limits.quota_max <= 0
    return {
        "period_start": period.start if period is not None else None,
        "period_end": period.end if period is not None and period.end != NEVER else None,
        "usage": usage,
        "quota_max": _plain_number(limits.quota_max),
        "usage_percentage": None if unlimited else usage_percentage(usage, limits.quota_max),
        "fired": [format_limit(t) for t in sorted(period.fired)] if period is not None else [],
        "thresholds": [format_limit(t) for t in sorted(limits.thresholds)],
    }


def key_quota(
    key: str,
    session: dict[str, Any],
    usage: dict[str, Any] | None,
    *,
    monitor: MonitorConfig,
    now: float,
) -> dict[str, Any]:
    """GET /quota/{key}: the key's stored session (compact) and usage, as the API shows them."""
    watched = watched_key(session, monitor)
    return {"key": key, "org_id": watched.org_id, **usage_view(usage, watched.limits, now)}


def org_quota(
    org: str,
    stored_org: dict[str, Any],
    usage: dict[str, Any] | None,
    *,
    monitor: MonitorConfig,
    now: float,
) -> dict[str, Any]:
    """GET /orgs/{org}/quota: the org's stored quota and usage, as the API shows them."""
    return {"org": org, **usage_view(usage, org_limits(stored_org, monitor), now)}
