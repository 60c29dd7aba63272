"""How every Kafka client of the project connects (TLS, SASL) from the ``kafka`` settings, and
why a connection failed, said in one line.

Every client is built from :func:`client_options` (aiokafka's producers, consumers and admin
clients) or :func:`faust_credentials` (the worker's App, whose consumer, producers and
transactional producers faust builds from them), so no client can connect in another way.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

import faust
from aiokafka.conn import create_conn
from aiokafka.errors import (
    KafkaConnectionError,
    KafkaError,
    SaslAuthenticationFailed,
    UnsupportedSaslMechanismError,
)
from aiokafka.helpers import create_ssl_context

from pipeline.config import KafkaSettings
from pipeline.errors import ConfigError


def ssl_context(kafka: KafkaSettings) -> ssl.SSLContext | None:
    """The TLS context of every connection, or None without TLS. The certificate chain is always
    verified; ``ssl_check_hostname`` false skips only the check of the name in it."""
    if not kafka.uses_tls:
        return None
    try:
        context: ssl.SSLContext = create_ssl_context(
            cafile=kafka.ssl_cafile, certfile=kafka.ssl_certfile, keyfile=kafka.ssl_keyfile
        )
    except (ssl.SSLError, OSError) as exc:
        files = ", ".join(
            f"{name} {value}"
            for name, value in (
                ("ssl_cafile", kafka.ssl_cafile),
                ("ssl_certfile", kafka.ssl_certfile),
                ("ssl_keyfile", kafka.ssl_keyfile),
            )
            if value is not None
        )
        raise ConfigError(f"bad setting kafka TLS files ({files}): {exc}") from exc
    context.check_hostname = kafka.ssl_check_hostname
    return context


def client_options(kafka: KafkaSettings) -> dict[str, Any]:
    """The keyword arguments that make an aiokafka client connect as the settings say."""
    options: dict[str, Any] = {
        "bootstrap_servers": kafka.bootstrap_servers,
        "security_protocol": kafka.security_protocol,
    }
    if kafka.uses_tls:
        options["ssl_context"] = ssl_context(kafka)
    if kafka.uses_sasl:
        assert kafka.sasl_password is not None  # checked by the settings
        options.update(
            sasl_mechanism=kafka.sasl_mechanism,
            sasl_plain_username=kafka.sasl_username,
            sasl_plain_password=kafka.sasl_password.get_secret_value(),
        )
    return options


def faust_credentials(kafka: KafkaSettings) -> Any:
    """faust's ``broker_credentials`` for the settings (None: plaintext)."""
    if kafka.uses_sasl:
        assert kafka.sasl_password is not None
        return faust.SASLCredentials(
            username=kafka.sasl_username,
            password=kafka.sasl_password.get_secret_value(),
            ssl_context=ssl_context(kafka),
            mechanism=kafka.sasl_mechanism,
        )
    if kafka.uses_tls:
        return faust.SSLCredentials(ssl_context(kafka))
    return None


async def connection_problem(kafka: KafkaSettings, timeout: float = 10) -> str | None:
    """Why no bootstrap server accepts a connection as the settings say, in one line naming
    the setting to look at; None once one does (the problem, if any, is elsewhere)."""
    problems = []
    for server in kafka.bootstrap_servers.split(","):
        host, _, port = server.strip().rpartition(":")
        problem = await _connect(kafka, host, int(port), timeout)
        if problem is None:
            return None
        problems.append(problem)
    return problems[0]


async def _connect(kafka: KafkaSettings, host: str, port: int, timeout: float) -> str | None:
    options = client_options(kafka)
    del options["bootstrap_servers"]
    try:
        connection = await asyncio.wait_for(
            create_conn(host, port, request_timeout_ms=int(timeout * 1000), **options), timeout
        )
    except (TimeoutError, KafkaError, OSError) as exc:
        return explain(exc, kafka, f"{host}:{port}", timeout)
    connection.close()
    return None


def explain(exc: BaseException, kafka: KafkaSettings, where: str, timeout: float) -> str:
    """One line for why connecting to ``where`` failed, naming the setting to look at."""
    protocol = f"kafka.security_protocol is {kafka.security_protocol}"
    if isinstance(exc, TimeoutError):
        message = f"{where} did not answer within {timeout:g}s"
    elif isinstance(exc, ssl.SSLCertVerificationError):
        message = (
            f"{where} presented a certificate that is not trusted ({exc.verify_message}); "
            "set kafka.ssl_cafile to the CA that signed it"
        )
    elif isinstance(exc, ssl.SSLError):
        message = (
            f"TLS with {where} failed ({exc.reason or exc}); does that listener speak TLS? "
            f"({protocol})"
        )
    elif isinstance(exc, SaslAuthenticationFailed):
        message = (
            f"{where} refused user {kafka.sasl_username!r} ({kafka.sasl_mechanism}); "
            "check kafka.sasl_username and kafka.sasl_password"
        )
    elif isinstance(exc, UnsupportedSaslMechanismError):
        message = (
            f"{where} does not offer SASL mechanism {kafka.sasl_mechanism} (kafka.sasl_mechanism)"
        )
    elif isinstance(exc, ConnectionRefusedError):
        message = f"nothing listens at {where}"
    elif isinstance(exc, KafkaConnectionError | ConnectionError):
        message = (
            f"{where} closed the connection; does that listener require TLS or SASL? ({protocol})"
        )
    else:
        message = f"cannot connect to {where}: {type(exc).__name__}: {exc}"
    return message
