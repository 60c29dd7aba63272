"""pipeline.devtools.demo: the embedded defaults send webhooks to the local receiver and
emails through the local SMTP server; what the demo prints names subjects as a person would."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from pipeline.config import Settings
from pipeline.devtools.demo import (
    BASE_RATE,
    PERIOD,
    SAMPLE_KEYS,
    SAMPLE_ORGS,
    demo_config,
    sample_orgs,
    sample_sessions,
    subject_of,
    usage_entry,
)


def test_the_demo_config_points_every_channel_at_the_local_peers(tmp_path: Path) -> None:
    config = demo_config(
        "42", "127.0.0.1:9092", "http://127.0.0.1:8001", "127.0.0.1:2525", tmp_path
    )
    settings = Settings.model_validate(config)

    assert settings.monitor.configuration.target_path == "http://127.0.0.1:8001/quota-alerts"
    backend = settings.email_backend
    assert backend.enable_email_notifications
    assert (backend.code, backend.settings.SMTPAddress) == ("smtp", "127.0.0.1:2525")


def test_the_samples_give_emails_somebody_to_go_to() -> None:
    developers = [s["meta_data"]["developer_email"] for *_, s in SAMPLE_KEYS if "meta_data" in s]
    desks = [
        o["event_options"]["trigger_event"]["email"]
        for o in SAMPLE_ORGS.values()
        if "event_options" in o
    ]
    assert developers == ["alice@example.com"]
    assert desks == ["ops@acme.example"]


@pytest.mark.parametrize("rate", [50.0, BASE_RATE, 1000.0])
def test_every_renewing_quota_outlasts_the_time_its_thresholds_take_to_cross(rate: float) -> None:
    """Each threshold can be seen to fire once per period: a quota fills (100%) in under two
    minutes of the simulated traffic, whatever the rate, and its period lasts an hour."""
    shares: dict[str, float] = {}
    for _, key, org, share, _ in SAMPLE_KEYS:
        shares[key] = share
        shares[org] = shares.get(org, 0) + share
    quotas = [*sample_sessions(rate), *sample_orgs(rate)]
    filled = 0
    for subject, value in quotas:
        quota = orjson.loads(value)
        if quota["quota_max"] <= 0:
            continue
        seconds_to_fill = quota["quota_max"] / (rate * shares[subject])
        assert seconds_to_fill < 120, subject
        assert quota["quota_renewal_rate"] in (0, PERIOD)
        assert 10 * seconds_to_fill < PERIOD
        filled += 1
    assert filled == 5  # alice, bob, dave, acme, globex (carol is unlimited)


def test_an_org_trigger_shows_as_the_org_and_a_key_trigger_by_name() -> None:
    assert subject_of({"subject": "org", "org": "acme", "key": "acme"}) == "org acme"
    assert subject_of({"org": "acme", "key": "", "trigger_limit": "50"}) == "org acme"
    assert subject_of({"subject": "key", "org": "acme", "key": "demo-key-bob"}) == "key bob (acme)"
    # A key the demo does not know is masked, never printed whole.
    assert subject_of({"subject": "key", "org": "x", "key": "sk-0123456789abcdef"}) == (
        "key sk-0…cdef (x)"
    )


@pytest.mark.parametrize(
    ("view", "shown"),
    [
        (
            {"usage": 2600, "usage_percentage": 130, "fired": ["50", "80", "100"]},
            "bob 130% (fired 50, 80, 100)",
        ),
        ({"usage": 20, "usage_percentage": 1, "fired": []}, "bob 1% (none fired)"),
        ({"usage": 4321, "usage_percentage": None, "fired": []}, "bob unlimited (4,321 requests)"),
    ],
)
def test_usage_entries(view: dict[str, object], shown: str) -> None:
    assert usage_entry("bob", view) == shown
