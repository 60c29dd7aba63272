"""pipeline.service.summary: the worker's start line says what it monitors and where its
deliveries go, and never prints a target's path or a secret."""

from __future__ import annotations

from typing import Any

import pytest

from pipeline.config import Settings
from pipeline.service.summary import start_line

SECRET_PATH = "/services/T000/B000/XXXXXXXXXXXXXXXX"


def line(**config: Any) -> str:
    return start_line(Settings.model_validate(config))


def test_the_defaults_say_monitors_are_off_and_email_is_off() -> None:
    text = line()
    assert "worker of quota-pipeline on 127.0.0.1:9092 (PLAINTEXT, at_least_once)" in text
    assert "trigger monitors off (monitor.enable_trigger_monitors)" in text
    assert "no monitor webhook" in text
    assert "email off" in text
    assert "HTTP API off" in text


def test_a_full_config_names_subjects_limits_targets_and_backend() -> None:
    text = line(
        app_id="alerts",
        monitor={
            "enable_trigger_monitors": True,
            "monitor_user_keys": True,
            "monitor_org_keys": True,
            "global_trigger_limits": [80, 50, 100],
            "configuration": {"target_path": f"https://hooks.slack.com{SECRET_PATH}"},
        },
        delivery={"signing_secrets": ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]},
        email_backend={
            "enable_email_notifications": True,
            "code": "smtp",
            "settings": {"SMTPAddress": "smtp.example:587"},
        },
        web={"token": "t0ken-value"},
    )
    assert "worker of alerts" in text
    assert "monitoring keys and orgs (global limits 50/80/100%" in text
    assert "webhooks to https://hooks.slack.com (signed) and each org's own" in text
    assert "email through smtp smtp.example:587" in text
    assert "HTTP API on" in text
    assert SECRET_PATH not in text
    assert "whsec_" not in text
    assert "t0ken-value" not in text


@pytest.mark.parametrize(
    ("monitor", "said"),
    [
        (
            {"enable_trigger_monitors": True},
            "neither keys nor orgs watched (monitor.monitor_user_keys, monitor.monitor_org_keys)",
        ),
        (
            {"enable_trigger_monitors": True, "monitor_org_keys": True},
            "monitoring orgs (no global limits;",
        ),
        (
            {
                "enable_trigger_monitors": True,
                "monitor_user_keys": True,
                "global_trigger_limit": 80,
            },
            "monitoring keys (global limits 80%;",
        ),
    ],
)
def test_what_is_monitored(monitor: dict[str, Any], said: str) -> None:
    assert said in line(monitor=monitor)


def test_an_http_email_provider_is_named_by_its_code() -> None:
    text = line(
        email_backend={
            "enable_email_notifications": True,
            "code": "sendgrid",
            "settings": {"ClientKey": "SG.secret"},
        }
    )
    assert "email through sendgrid" in text
    assert "SG.secret" not in text


def test_a_secured_connection_names_protocol_mechanism_and_user_never_the_password() -> None:
    text = line(
        kafka={
            "bootstrap_servers": "b-1.example:9096",
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": "SCRAM-SHA-512",
            "sasl_username": "quota",
            "sasl_password": "s3cret-pass",
        }
    )
    assert "on b-1.example:9096 (SASL_SSL SCRAM-SHA-512 as quota, at_least_once)" in text
    assert "s3cret-pass" not in text
