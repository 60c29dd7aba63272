"""pipeline.delivery.outcomes: what an endpoint's answer means for the delivery."""

from __future__ import annotations

from email.utils import formatdate

import pytest

from pipeline.delivery.outcomes import classify_status, parse_retry_after
from pipeline.errors import DeliveryError, PermanentDeliveryError, RetriableDeliveryError

NOW = 1764331200.0


def classify(
    status: int, *, retry_after: str | None = None, now: float = NOW
) -> DeliveryError | None:
    return classify_status(status, retry_after=retry_after, now=now)


@pytest.mark.parametrize("status", [200, 201, 202, 204, 299])
def test_2xx_is_success(status: int) -> None:
    assert classify(status) is None


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504, 599])
def test_retriable_statuses(status: int) -> None:
    error = classify(status)

    assert isinstance(error, RetriableDeliveryError)
    assert error.retriable is True
    assert error.status == status
    assert error.retry_after is None
    assert str(status) in str(error)


@pytest.mark.parametrize("status", [100, 301, 302, 304, 307, 400, 401, 403, 404, 410, 422])
def test_permanent_statuses(status: int) -> None:
    error = classify(status)

    assert isinstance(error, PermanentDeliveryError)
    assert not isinstance(error, RetriableDeliveryError)
    assert error.retriable is False
    assert error.status == status
    assert str(status) in str(error)


def test_retry_after_seconds_on_429() -> None:
    error = classify(429, retry_after="120")

    assert isinstance(error, RetriableDeliveryError)
    assert error.retry_after == 120.0


def test_retry_after_http_date_on_503() -> None:
    error = classify(503, retry_after=formatdate(NOW + 60, usegmt=True))

    assert isinstance(error, RetriableDeliveryError)
    assert error.retry_after == pytest.approx(60, abs=1)


def test_permanent_error_ignores_retry_after() -> None:
    error = classify(400, retry_after="120")

    assert isinstance(error, PermanentDeliveryError)
    assert not hasattr(error, "retry_after")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("120", 120.0, id="seconds"),
        pytest.param("0", 0.0, id="zero"),
        pytest.param(" 30 ", 30.0, id="padded"),
        pytest.param(formatdate(NOW + 60, usegmt=True), 60.0, id="http-date"),
        pytest.param(formatdate(NOW - 60, usegmt=True), 0.0, id="date-in-the-past"),
        pytest.param(None, None, id="absent"),
        pytest.param("", None, id="empty"),
        pytest.param("soon", None, id="garbage"),
        pytest.param("-5", None, id="negative"),
        pytest.param("1.5", None, id="fraction"),
        pytest.param("Wed, 99 Foo 2025", None, id="broken-date"),
    ],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    result = parse_retry_after(value, now=NOW)

    if expected is None:
        assert result is None
    else:
        assert result == pytest.approx(expected, abs=1)


def test_retry_after_unicode_digit_is_garbage() -> None:
    assert parse_retry_after("²", now=NOW) is None
