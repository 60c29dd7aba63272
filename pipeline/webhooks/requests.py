"""Building webhook requests from events (pure): body, headers, signature."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import orjson

from pipeline import __version__
from pipeline.usage.triggers import TYK_FIELDS
from pipeline.webhooks.signing import signature_header

USER_AGENT = f"quota-pipeline/{__version__}"


class WebhookRequest(NamedTuple):
    """One webhook delivery, ready to send; the same on every attempt but for the timestamp."""

    #: The event id: the ``webhook-id`` header, the same on every retry.
    event_id: str
    method: str
    url: str
    body: bytes
    #: Headers from config (Tyk's header_map); ours are added per attempt.
    extra_headers: Mapping[str, str]


def default_trigger_body(event: Mapping[str, Any]) -> bytes:
    """Tyk's five monitor fields plus usage_percentage, which Tyk's users asked for."""
    body = {name: event[name] for name in TYK_FIELDS}
    body["usage_percentage"] = event["usage_percentage"]
    return orjson.dumps(body)


def secrets_for(
    url: str, default: Sequence[str], per_target: Mapping[str, Sequence[str]]
) -> Sequence[str]:
    """The signing secrets of one target: those of its longest matching URL prefix, if any."""
    if not per_target:
        return default
    prefixes = [prefix for prefix in per_target if url.startswith(prefix)]
    if not prefixes:
        return default
    return per_target[max(prefixes, key=len)]


def attempt_headers(
    request: WebhookRequest, *, now: float, signing_secrets: Sequence[str]
) -> dict[str, str]:
    """Every header of one attempt: config headers, then ours (which config cannot override)."""
    timestamp = int(now)
    ours = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "webhook-id": request.event_id,
        "webhook-timestamp": str(timestamp),
    }
    if signing_secrets:
        ours["webhook-signature"] = signature_header(
            signing_secrets, request.event_id, timestamp, request.body
        )
    if not request.extra_headers:  # the usual case: nothing to merge
        return ours
    # Header names are case-insensitive: a config header that names one of ours in any case
    # (or a stale signature when signing is off) is dropped, never sent beside ours.
    reserved = {name.lower() for name in ours} | {"webhook-signature"}
    headers = {k: v for k, v in request.extra_headers.items() if k.lower() not in reserved}
    headers.update(ours)
    return headers
