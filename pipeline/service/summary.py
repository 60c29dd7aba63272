"""The one line a worker logs at start: what it monitors and where deliveries go (pure).

An operator reading a worker's log should not need its config file to know what it is doing:
a monitor switch left off, or email configured but disabled, shows here first.
"""

from __future__ import annotations

from pipeline import __version__
from pipeline.config import Settings
from pipeline.service.redaction import target


def percentages(limits: frozenset[float]) -> str:
    return "/".join(f"{limit:g}" for limit in sorted(limits)) + "%"


def monitoring(settings: Settings) -> str:
    monitor = settings.monitor
    if not monitor.enable_trigger_monitors:
        return "trigger monitors off (monitor.enable_trigger_monitors)"
    watched = [
        name
        for name, on in (("keys", monitor.monitor_user_keys), ("orgs", monitor.monitor_org_keys))
        if on
    ]
    if not watched:
        return (
            "trigger monitors on, but neither keys nor orgs watched "
            "(monitor.monitor_user_keys, monitor.monitor_org_keys)"
        )
    limits = monitor.global_thresholds()
    at = f"global limits {percentages(limits)}" if limits else "no global limits"
    return f"monitoring {' and '.join(watched)} ({at}; a subject's own limits win)"


def webhooks(settings: Settings) -> str:
    monitor_target = settings.monitor.configuration.target_path
    signed = "signed" if settings.delivery.signing_secrets else "unsigned"
    first = f"{target(monitor_target)} ({signed})" if monitor_target else "no monitor webhook"
    return f"webhooks to {first} and each org's own"


def email(settings: Settings) -> str:
    backend = settings.email_backend
    if not backend.enable_email_notifications:
        return "email off"
    if backend.code == "smtp":
        return f"email through smtp {backend.settings.SMTPAddress}"
    return f"email through {backend.code}"


def connection(settings: Settings) -> str:
    """How the worker connects: never a secret."""
    kafka = settings.kafka
    if kafka.uses_sasl:
        return f"{kafka.security_protocol} {kafka.sasl_mechanism} as {kafka.sasl_username}"
    return kafka.security_protocol


def start_line(settings: Settings) -> str:
    return (
        f"quota-pipeline {__version__} worker of {settings.app_id} on "
        f"{settings.kafka.bootstrap_servers} ({connection(settings)}, "
        f"{settings.kafka.processing_guarantee}): "
        f"{monitoring(settings)}; {webhooks(settings)}; {email(settings)}; "
        f"web {settings.web.bind}:{settings.web.port} "
        f"(HTTP API {'on' if settings.web.token else 'off'})"
    )
