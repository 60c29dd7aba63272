"""build_email_sink: the sink email_backend.code names, and ConfigErrors for what it lacks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pipeline.config import EmailBackend
from pipeline.email.factory import build_email_sink
from pipeline.email.mailgun import MailgunSink
from pipeline.email.mandrill import MandrillSink
from pipeline.email.sendgrid import SendGridSink
from pipeline.email.ses import SesSink
from pipeline.email.smtp import SmtpSink
from pipeline.errors import ConfigError
from tests.functional.email.email_peers import isolate_aws_environment

COMPLETE = {
    "smtp": {"SMTPAddress": "mail.example.com:587"},
    "sendgrid": {"ClientKey": "SG.key"},
    "mailgun": {"Domain": "mg.example.com", "PrivateKey": "key-mailgun"},
    "mandrill": {"ClientKey": "md-key"},
    "amazonses": {"Region": "eu-west-1", "AccessKeyId": "AKID", "SecretAccessKey": "secret"},
}


def backend(code: str, **settings: Any) -> EmailBackend:
    return EmailBackend.model_validate(
        {"code": code, "settings": {**COMPLETE[code], **settings}, "base_urls": {}}
    )


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        ("smtp", SmtpSink),
        ("sendgrid", SendGridSink),
        ("mailgun", MailgunSink),
        ("mandrill", MandrillSink),
        ("amazonses", SesSink),
    ],
)
def test_each_code_builds_its_sink(code: str, kind: type) -> None:
    assert isinstance(build_email_sink(backend(code), timeout=5), kind)


@pytest.mark.parametrize(
    ("code", "setting"),
    [
        ("smtp", "SMTPAddress"),
        ("sendgrid", "ClientKey"),
        ("mailgun", "Domain"),
        ("mailgun", "PrivateKey"),
        ("mandrill", "ClientKey"),
    ],
)
def test_a_missing_required_setting_is_named(code: str, setting: str) -> None:
    with pytest.raises(ConfigError, match=rf"settings\.{setting} is required .* '{code}'"):
        build_email_sink(backend(code, **{setting: " "}), timeout=5)


def test_an_smtp_username_needs_a_password() -> None:
    with pytest.raises(ConfigError, match=r"settings\.SMTPPassword is required when SMTPUsername"):
        build_email_sink(backend("smtp", SMTPUsername="quota"), timeout=5)

    sink = build_email_sink(backend("smtp", SMTPUsername="quota", SMTPPassword=" pw "), timeout=5)
    assert isinstance(sink, SmtpSink)


def test_ses_needs_a_region_or_an_endpoint_that_names_one() -> None:
    with pytest.raises(ConfigError, match=r"settings\.Region is required"):
        build_email_sink(backend("amazonses", Region=""), timeout=5)

    sink = build_email_sink(
        backend("amazonses", Region="", Endpoint="email.ap-south-1.amazonaws.com"), timeout=5
    )
    assert isinstance(sink, SesSink)
    assert sink.base_url == "https://email.ap-south-1.amazonaws.com"


@pytest.mark.parametrize(
    ("given", "missing"),
    [
        ({"AccessKeyId": "AKID", "SecretAccessKey": " "}, "SecretAccessKey"),
        ({"AccessKeyId": " ", "SecretAccessKey": "secret"}, "AccessKeyId"),
    ],
)
def test_ses_needs_both_keys_or_neither(given: dict[str, str], missing: str) -> None:
    with pytest.raises(ConfigError) as caught:
        build_email_sink(backend("amazonses", **given), timeout=5)

    message = str(caught.value)
    assert message.startswith(f"email_backend.settings.{missing} is required when ")
    assert "credential chain" in message
    assert "\n" not in message
    assert "secret" not in message.replace("SecretAccessKey", "")


def test_ses_without_keys_uses_the_aws_credential_chain(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    isolate_aws_environment(monkeypatch, tmp_path)  # building must not look credentials up

    sink = build_email_sink(backend("amazonses", AccessKeyId=" ", SecretAccessKey=""), timeout=5)

    assert isinstance(sink, SesSink)
    assert sink.base_url == "https://email.eu-west-1.amazonaws.com"


@pytest.mark.parametrize("address", ["mail.example.com", "mail.example.com:smtp", ":25", "a:1/x"])
def test_an_smtp_address_that_is_not_host_port_is_a_config_error(address: str) -> None:
    with pytest.raises(ConfigError, match="SMTPAddress"):
        build_email_sink(backend("smtp", SMTPAddress=address), timeout=5)


def test_base_urls_replace_the_public_api_address() -> None:
    configured = backend("sendgrid").model_copy(
        update={"base_urls": {"sendgrid": "http://127.0.0.1:8025/"}}
    )

    sink = build_email_sink(configured, timeout=5)

    assert isinstance(sink, SendGridSink)
    assert sink.base_url == "http://127.0.0.1:8025"


def test_public_api_addresses_are_the_defaults() -> None:
    expected = {
        "sendgrid": "https://api.sendgrid.com",
        "mailgun": "https://api.mailgun.net",
        "mandrill": "https://mandrillapp.com",
        "amazonses": "https://email.eu-west-1.amazonaws.com",
    }
    for code, url in expected.items():
        sink = build_email_sink(backend(code), timeout=5)
        assert getattr(sink, "base_url", None) == url


def test_ses_base_url_wins_over_the_endpoint_setting() -> None:
    configured = backend("amazonses", Endpoint="email.eu-west-1.amazonaws.com").model_copy(
        update={"base_urls": {"amazonses": "http://127.0.0.1:9000"}}
    )

    sink = build_email_sink(configured, timeout=5)

    assert isinstance(sink, SesSink)
    assert sink.base_url == "http://127.0.0.1:9000"
