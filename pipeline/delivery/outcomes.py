"""What an attempt's answer means for the delivery (pure): success, retry later, or give up."""

from __future__ import annotations

from email.utils import parsedate_to_datetime

from pipeline.errors import DeliveryError, PermanentDeliveryError, RetriableDeliveryError

RETRIABLE_STATUSES = frozenset({408, 429})


def parse_retry_after(value: str | None, *, now: float) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date), if usable."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now)


def classify_status(status: int, *, retry_after: str | None, now: float) -> DeliveryError | None:
    """None for 2xx; otherwise the error to raise: retriable for 408, 429 and 5xx."""
    if 200 <= status < 300:
        return None
    message = f"endpoint answered {status}"
    if status in RETRIABLE_STATUSES or status >= 500:
        return RetriableDeliveryError(
            message, status=status, retry_after=parse_retry_after(retry_after, now=now)
        )
    # 3xx included: redirects are not followed, so they are a misconfigured target.
    return PermanentDeliveryError(message, status=status)
