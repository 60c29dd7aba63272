"""The email sink that Tyk's ``email_backend.code`` names, built from its settings."""

from __future__ import annotations

from typing import Protocol

from pydantic import SecretStr

from pipeline.config import EmailBackend
from pipeline.email import mailgun, mandrill, sendgrid
from pipeline.email.message import EmailRequest
from pipeline.email.ses import SesSink, endpoint_url, region_of
from pipeline.email.smtp import SmtpSink
from pipeline.errors import ConfigError


class EmailSink(Protocol):
    """What the delivery agent needs of any email backend."""

    async def start(self) -> None:
        """Called once before the first send."""

    async def stop(self) -> None:
        """Releases connections; idempotent."""

    async def send(self, request: EmailRequest) -> None:
        """Returns when the backend accepted the email; raises Retriable- or
        PermanentDeliveryError otherwise."""


def _required(backend: EmailBackend, setting: str, *, when: str = "") -> str:
    value = getattr(backend.settings, setting)
    # A secret is used exactly as given; a plain setting loses stray whitespace.
    text = value.get_secret_value() if isinstance(value, SecretStr) else str(value).strip()
    if not text.strip():
        when = when or f"email_backend.code is {backend.code!r}"
        raise ConfigError(f"email_backend.settings.{setting} is required when {when}")
    return text


def _ses(backend: EmailBackend, *, timeout: float) -> SesSink:
    settings = backend.settings
    endpoint = endpoint_url(settings.Endpoint.strip()) if settings.Endpoint.strip() else None
    region = settings.Region.strip() or (region_of(endpoint) if endpoint else None)
    if not region:
        raise ConfigError(
            "email_backend.settings.Region is required when email_backend.code is 'amazonses' "
            "(or an Endpoint such as email.eu-west-1.amazonaws.com that names one)"
        )
    key_id = settings.AccessKeyId.strip()
    secret = settings.SecretAccessKey.get_secret_value()
    # Both keys, or neither: then the sink signs with what botocore's credential chain finds
    # (environment, AWS_PROFILE, web identity, container, instance metadata).
    if bool(key_id) != bool(secret.strip()):
        missing, given = (
            ("SecretAccessKey", "AccessKeyId") if key_id else ("AccessKeyId", "SecretAccessKey")
        )
        raise ConfigError(
            f"email_backend.settings.{missing} is required when {given} is set "
            "(leave both empty to use the AWS credential chain)"
        )
    return SesSink(
        region=region,
        access_key_id=key_id,
        secret_access_key=secret if key_id else "",  # as given; only blanks count as none
        base_url=backend.base_urls.get("amazonses") or endpoint,
        timeout=timeout,
    )


def build_email_sink(backend: EmailBackend, *, timeout: float) -> EmailSink:
    """The sink for ``backend.code``; ConfigError naming a required setting that is missing.

    ``timeout`` bounds one send, connection included. ``backend.base_urls[code]`` replaces a
    provider's public API address (for SES it wins over ``Endpoint``).
    """
    settings = backend.settings
    base_url = backend.base_urls.get(backend.code)
    match backend.code:
        case "smtp":
            username = settings.SMTPUsername.strip()
            return SmtpSink(
                address=_required(backend, "SMTPAddress"),
                username=username,
                password=(
                    _required(backend, "SMTPPassword", when="SMTPUsername is set")
                    if username
                    else ""
                ),
                tls_insecure_skip_verify=settings.TLSInsecureSkipVerify,
                timeout=timeout,
            )
        case "sendgrid":
            return sendgrid.SendGridSink(
                api_key=_required(backend, "ClientKey"),
                base_url=base_url or sendgrid.DEFAULT_BASE_URL,
                timeout=timeout,
            )
        case "mailgun":
            return mailgun.MailgunSink(
                domain=_required(backend, "Domain"),
                api_key=_required(backend, "PrivateKey"),
                base_url=base_url or mailgun.DEFAULT_BASE_URL,
                timeout=timeout,
            )
        case "mandrill":
            return mandrill.MandrillSink(
                api_key=_required(backend, "ClientKey"),
                base_url=base_url or mandrill.DEFAULT_BASE_URL,
                timeout=timeout,
            )
        case "amazonses":
            return _ses(backend, timeout=timeout)
