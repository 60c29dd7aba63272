"""pipeline.engine.security: the options every client connects with, and the one line that
says why a connection failed, against real TLS servers on loopback (certificates from trustme)."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import faust
import pytest
import trustme

from pipeline.config import KafkaSettings
from pipeline.devtools.local import free_port
from pipeline.engine.security import (
    client_options,
    connection_problem,
    faust_credentials,
    ssl_context,
)
from pipeline.errors import ConfigError

PASSWORD = "scram-password"


@pytest.fixture(scope="module")
def authority() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def ca_file(authority: trustme.CA, tmp_path: Path) -> Path:
    path = tmp_path / "ca.pem"
    authority.cert_pem.write_to_path(str(path))
    return path


def kafka(**settings: Any) -> KafkaSettings:
    return KafkaSettings.model_validate(settings)


def test_plaintext_clients_get_no_tls_and_no_sasl() -> None:
    settings = kafka(bootstrap_servers="k1:9092,k2:9092")
    assert client_options(settings) == {
        "bootstrap_servers": "k1:9092,k2:9092",
        "security_protocol": "PLAINTEXT",
    }
    assert ssl_context(settings) is None
    assert faust_credentials(settings) is None


def test_sasl_ssl_clients_verify_the_chain_and_the_name(ca_file: Path) -> None:
    settings = kafka(
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="quota",
        sasl_password=PASSWORD,
        ssl_cafile=ca_file,
    )
    options = client_options(settings)
    assert options["security_protocol"] == "SASL_SSL"
    assert (options["sasl_mechanism"], options["sasl_plain_username"]) == ("SCRAM-SHA-512", "quota")
    assert options["sasl_plain_password"] == PASSWORD
    context = options["ssl_context"]
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname is True
    credentials = faust_credentials(settings)
    assert isinstance(credentials, faust.SASLCredentials)
    assert credentials.protocol.value == "SASL_SSL"
    assert credentials.mechanism.value == "SCRAM-SHA-512"
    assert credentials.password == PASSWORD
    assert PASSWORD not in repr(credentials)


def test_sasl_over_plaintext_has_no_tls_context() -> None:
    settings = kafka(security_protocol="SASL_PLAINTEXT", sasl_username="u", sasl_password="p")
    assert "ssl_context" not in client_options(settings)
    assert faust_credentials(settings).protocol.value == "SASL_PLAINTEXT"


def test_turning_the_name_check_off_still_verifies_the_chain(ca_file: Path) -> None:
    context = ssl_context(
        kafka(security_protocol="SSL", ssl_cafile=ca_file, ssl_check_hostname=False)
    )
    assert context is not None
    assert context.check_hostname is False
    assert context.verify_mode == ssl.CERT_REQUIRED


def test_mutual_tls_loads_the_client_certificate(
    authority: trustme.CA, ca_file: Path, tmp_path: Path
) -> None:
    client = authority.issue_cert("quota-pipeline@example")
    cert, key = tmp_path / "client.pem", tmp_path / "client.key"
    client.cert_chain_pems[0].write_to_path(str(cert))
    client.private_key_pem.write_to_path(str(key))
    settings = kafka(
        security_protocol="SSL", ssl_cafile=ca_file, ssl_certfile=cert, ssl_keyfile=key
    )
    assert isinstance(faust_credentials(settings), faust.SSLCredentials)
    assert ssl_context(settings) is not None


def test_a_file_that_is_not_pem_is_a_config_error_naming_it(tmp_path: Path) -> None:
    garbage = tmp_path / "ca.pem"
    garbage.write_text("not a certificate")
    with pytest.raises(ConfigError, match=rf"bad setting kafka TLS files \(ssl_cafile {garbage}\)"):
        ssl_context(kafka(security_protocol="SSL", ssl_cafile=garbage))


@pytest.fixture
async def tls_server(authority: trustme.CA) -> AsyncIterator[int]:
    """A TLS server on loopback for 127.0.0.1 that closes each connection after the handshake
    (it speaks no Kafka: the handshake is what these tests are about)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1").configure_cert(context)

    async def close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    port = free_port()
    server = await asyncio.start_server(close, "127.0.0.1", port, ssl=context)
    async with server:
        yield port


async def test_an_untrusted_certificate_is_named_with_the_setting_to_fix(tls_server: int) -> None:
    problem = await connection_problem(
        kafka(bootstrap_servers=f"127.0.0.1:{tls_server}", security_protocol="SSL"), timeout=5
    )
    assert problem is not None
    assert f"127.0.0.1:{tls_server} presented a certificate that is not trusted" in problem
    assert "kafka.ssl_cafile" in problem


async def test_a_plaintext_client_at_a_tls_listener_is_told_so(tls_server: int) -> None:
    problem = await connection_problem(
        kafka(bootstrap_servers=f"127.0.0.1:{tls_server}"), timeout=5
    )
    assert problem is not None
    assert (
        "does that listener require TLS or SASL? (kafka.security_protocol is PLAINTEXT)" in problem
    )


async def test_nothing_listening_is_said_as_such() -> None:
    port = free_port()
    problem = await connection_problem(kafka(bootstrap_servers=f"127.0.0.1:{port}"), timeout=5)
    assert problem == f"nothing listens at 127.0.0.1:{port}"
