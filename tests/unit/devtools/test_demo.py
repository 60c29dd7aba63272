"""pipeline.devtools.demo: the embedded defaults send webhooks to the local receiver and
emails through the local SMTP server."""

from __future__ import annotations

from pathlib import Path

from pipeline.config import Settings
from pipeline.devtools.demo import SAMPLE_KEYS, SAMPLE_ORGS, demo_config


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
