"""What never reaches a log line: configured secrets, email addresses, and the record contents
that faust, mode and aiokafka print at debug level.

Our own log lines name keys only by event id (a hash) and targets only by host
(:func:`target`). Third-party libraries print whole Kafka records at debug
level (keys are API keys, sessions hold developers' addresses), so their loggers stay at info
even with ``--loglevel debug``. Every log record, whatever its logger and handler, is then
redacted once as it is made: each configured secret becomes ``[secret]`` and each email
address keeps its first character and its domain.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, SecretStr

#: ``--loglevel`` names, as the logging levels they stand for.
LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "error": logging.ERROR,
    "crit": logging.CRITICAL,
}

#: Loggers of libraries whose debug lines print record keys and values, or request bodies.
CHATTY_LIBRARIES = ("faust", "mode", "aiokafka", "kafka", "aiohttp", "aiosmtplib", "botocore")

EMAIL = re.compile(r"[\w.!#$%&'*+/=?^`{|}~-]+@((?:[\w-]+\.)*[\w-]+)")

#: Secrets shorter than this are not replaced: they would match too much text.
MIN_SECRET_LENGTH = 4


def mask_email(address: str) -> str:
    """An address kept recognisable, not readable: ``d…@example.com``."""
    local, _, domain = address.partition("@")
    return f"{local[:1]}…@{domain}"


def target(url: str) -> str:
    """A delivery target as a log line names it: a webhook by its scheme, host and port (its
    path and query may be a secret, as a chat webhook's are), an email by its masked address."""
    if url.startswith("mailto:"):
        return "mailto:" + mask_email(url.removeprefix("mailto:"))
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}"


class Redactor:
    """Replaces secrets and email addresses in text."""

    def __init__(self, secrets: Iterable[str]) -> None:
        kept = sorted({s for s in secrets if len(s) >= MIN_SECRET_LENGTH}, key=len, reverse=True)
        self._secrets = re.compile("|".join(re.escape(s) for s in kept)) if kept else None

    def __call__(self, text: str) -> str:
        if self._secrets is not None:
            text = self._secrets.sub("[secret]", text)
        if "@" in text:
            text = EMAIL.sub(lambda match: mask_email(match.group(0)), text)
        return text


def secrets_of(settings: BaseModel) -> list[str]:
    """Every SecretStr value anywhere in a settings tree."""
    found: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, SecretStr):
            found.append(value.get_secret_value())
        elif isinstance(value, BaseModel):
            for name in type(value).model_fields:
                walk(getattr(value, name))
        elif isinstance(value, dict):
            for item in value.values():
                walk(item)
        elif isinstance(value, list | tuple):
            for item in value:
                walk(item)

    walk(settings)
    return found


def quiet_libraries(level: int) -> None:
    """Set the chatty libraries' loggers to ``level``, but never below info."""
    for name in CHATTY_LIBRARIES:
        logging.getLogger(name).setLevel(max(level, logging.INFO))


def install(redact: Redactor, level: int) -> None:
    """Redact every log record from now on; chatty libraries log at ``level`` or info."""
    quiet_libraries(level)
    make_record = logging.getLogRecordFactory()
    formatter = logging.Formatter()

    def redacted_record(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = make_record(*args, **kwargs)
        record.msg = redact(record.getMessage())
        record.args = ()
        if record.exc_info:
            # Formatted now, and redacted: handlers print exc_text as it stands.
            record.exc_text = redact(formatter.formatException(record.exc_info))
            record.exc_info = None
        return record

    logging.setLogRecordFactory(redacted_record)
