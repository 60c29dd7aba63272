"""The ``kafka`` section's security settings: environment overrides, a masked password, and
one line for every combination that would connect other than as its operator meant."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from pipeline.config import Settings, load_settings
from pipeline.errors import ConfigError

PASSWORD = "scram-password-that-must-not-leak"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("QP_"):
            monkeypatch.delenv(name)


@pytest.fixture
def ca_file(tmp_path: Path) -> Path:
    path = tmp_path / "ca.pem"
    path.write_text("-----BEGIN CERTIFICATE-----\n")
    return path


def load(tmp_path: Path, kafka: dict[str, object]) -> Settings:
    path = tmp_path / "quota.json"
    path.write_text(json.dumps({"kafka": kafka}))
    return load_settings(path)


def test_plaintext_is_the_default() -> None:
    kafka = Settings().kafka
    assert (kafka.security_protocol, kafka.uses_tls, kafka.uses_sasl) == ("PLAINTEXT", False, False)
    assert kafka.ssl_check_hostname is True


def test_a_managed_cluster_config_loads_and_masks_the_password(
    tmp_path: Path, ca_file: Path
) -> None:
    settings = load(
        tmp_path,
        {
            "bootstrap_servers": "b-1.example:9096,b-2.example:9096",
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": "SCRAM-SHA-512",
            "sasl_username": "quota",
            "sasl_password": PASSWORD,
            "ssl_cafile": str(ca_file),
        },
    )
    assert settings.kafka.uses_tls
    assert settings.kafka.uses_sasl
    assert settings.kafka.ssl_cafile == ca_file
    assert PASSWORD not in repr(settings)
    assert PASSWORD not in str(settings.model_dump())
    # The section as the demo and the bench hand it to their workers: secret revealed.
    assert settings.kafka.connection() == {
        "bootstrap_servers": "b-1.example:9096,b-2.example:9096",
        "replication_factor": 1,
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_username": "quota",
        "sasl_password": PASSWORD,
        "ssl_cafile": str(ca_file),
        "ssl_check_hostname": True,
    }


def test_every_security_setting_has_an_environment_override(
    monkeypatch: pytest.MonkeyPatch, ca_file: Path
) -> None:
    monkeypatch.setenv("QP_KAFKA__SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("QP_KAFKA__SASL_MECHANISM", "SCRAM-SHA-256")
    monkeypatch.setenv("QP_KAFKA__SASL_USERNAME", "quota")
    monkeypatch.setenv("QP_KAFKA__SASL_PASSWORD", PASSWORD)
    monkeypatch.setenv("QP_KAFKA__SSL_CAFILE", str(ca_file))
    monkeypatch.setenv("QP_KAFKA__SSL_CHECK_HOSTNAME", "false")
    kafka = load_settings().kafka
    assert kafka.sasl_mechanism == "SCRAM-SHA-256"
    assert kafka.sasl_password is not None
    assert kafka.sasl_password.get_secret_value() == PASSWORD
    assert kafka.ssl_check_hostname is False


@pytest.mark.parametrize(
    ("kafka", "said"),
    [
        ({"security_protocol": "SASL_SSL"}, "needs sasl_username and sasl_password"),
        (
            {"security_protocol": "SASL_PLAINTEXT", "sasl_username": "quota"},
            "needs sasl_username and sasl_password",
        ),
        (
            {"sasl_username": "quota", "sasl_password": PASSWORD},
            "need security_protocol SASL_PLAINTEXT or SASL_SSL, not PLAINTEXT",
        ),
        ({"security_protocol": "TLS"}, "security_protocol"),
        (
            {"security_protocol": "SASL_SSL", "sasl_mechanism": "GSSAPI"},
            "sasl_mechanism",
        ),
    ],
)
def test_an_incomplete_or_unknown_security_setting_is_one_line(
    tmp_path: Path, kafka: dict[str, object], said: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, kafka)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("bad setting kafka")
    assert said in message
    assert PASSWORD not in message


def test_tls_files_without_tls_are_refused(tmp_path: Path, ca_file: Path) -> None:
    with pytest.raises(ConfigError, match="ssl_cafile need security_protocol SSL or SASL_SSL"):
        load(tmp_path, {"ssl_cafile": str(ca_file)})


def test_a_client_certificate_needs_its_key(tmp_path: Path, ca_file: Path) -> None:
    with pytest.raises(ConfigError, match="ssl_certfile and ssl_keyfile go together"):
        load(tmp_path, {"security_protocol": "SSL", "ssl_certfile": str(ca_file)})


def test_a_missing_ca_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"bad setting kafka.ssl_cafile in .*quota.json"):
        load(tmp_path, {"security_protocol": "SSL", "ssl_cafile": str(tmp_path / "none.pem")})
