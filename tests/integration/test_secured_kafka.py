"""Against a broker that requires TLS and SCRAM-SHA-512 (``KAFKA_SECURITY=sasl_ssl
deploy/kafka-local``), configured only from the ``client.json`` it writes: the slice works end
to end, and a plaintext client, a wrong password or an untrusted CA is one clear line and
exit status 2, from the command line and from the worker alike."""

from __future__ import annotations

import time
from typing import Any

import orjson
import pytest
import trustme

from pipeline.config import Settings
from pipeline.devtools.local import isolated_config
from pipeline.engine.clients import producer, read_topic
from tests.integration.brokers import Broker
from tests.integration.conftest import poll


@pytest.fixture
def secured_broker(sasl_broker: Broker) -> dict[str, Any]:
    """The ``kafka`` section of the session's TLS + SCRAM broker's client.json."""
    return sasl_broker.client_settings()


def refusal(result: tuple[int, str, str]) -> str:
    """The one line a refused command printed, from the ``cli`` fixture's (status, out, err),
    which fails the test if the command hangs; asserts exit status 2 and nothing else."""
    status, _, err = result
    assert status == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


async def test_the_slice_runs_on_a_sasl_ssl_broker_from_its_client_json(
    secured_broker, tmp_path, cli, start_worker, receiver
):
    config = isolated_config(
        "secured", kafka=secured_broker, partitions=2, data_dir=tmp_path / "data"
    )
    config["monitor"]["configuration"] = {"target_path": f"{receiver.url}/alerts"}
    config["delivery"] = {"allow_networks": ["127.0.0.0/8"]}
    settings = Settings.model_validate(config)

    status, _, err = await cli(config, "topics", "create")
    assert status == 0, err
    key = "secured-key"
    session = {key: {"org_id": "org-s", "quota_max": 10, "quota_renewal_rate": 3600}}
    status, _, err = await cli(config, "sessions", "put", "-", stdin=orjson.dumps(session))
    assert status == 0, err
    worker = await start_worker(config)
    async with producer(settings) as client:
        for _ in range(10):
            record = {"ts": time.time(), "org_id": "org-s", "key": key, "count": 1}
            await client.send_and_wait(
                settings.topics.requests, orjson.dumps(record), key=key.encode()
            )

    await receiver.wait_for(3, timeout=60)
    # Tyk's webhook body carries the limit as a string.
    limits = sorted(int(orjson.loads(hook.body)["trigger_limit"]) for hook in receiver.received)
    assert limits == [50, 80, 100]

    async def three_triggers() -> list[Any]:
        records = await read_topic(settings, settings.topics.triggers) or []
        return records if len(records) >= 3 else []

    triggers = await poll(three_triggers, timeout=30)
    assert sorted(int(orjson.loads(r.value)["trigger_limit"]) for r in triggers) == [50, 80, 100]
    log = worker.log_text()
    assert "(SASL_SSL SCRAM-SHA-512 as quota, at_least_once)" in log
    assert secured_broker["sasl_password"] not in log


async def test_the_client_json_is_a_config_file_as_it_is(secured_broker, cli):
    status, out, err = await cli({"kafka": secured_broker}, "topics", "create")
    assert status == 0, err
    assert "quota.triggers" in out


async def test_a_plaintext_client_is_refused(secured_broker, cli):
    plaintext = {"kafka": {"bootstrap_servers": secured_broker["bootstrap_servers"]}}
    line = refusal(await cli(plaintext, "topics", "create"))
    assert "closed the connection; does that listener require TLS or SASL?" in line
    assert "kafka.security_protocol is PLAINTEXT" in line


async def test_a_wrong_password_is_refused_with_a_clear_line(secured_broker, cli):
    wrong = {"kafka": {**secured_broker, "sasl_password": "not-the-password"}}
    line = refusal(await cli(wrong, "dlq", "list"))
    assert "refused user 'quota' (SCRAM-SHA-512)" in line
    assert "not-the-password" not in line


async def test_an_untrusted_certificate_is_refused_with_a_clear_line(secured_broker, cli, tmp_path):
    other_ca = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other_ca))
    untrusted = {"kafka": {**secured_broker, "ssl_cafile": str(other_ca)}}
    line = refusal(await cli(untrusted, "topics", "create"))
    assert "presented a certificate that is not trusted" in line
    assert "kafka.ssl_cafile" in line


async def test_a_worker_with_a_wrong_password_stops_with_the_same_line(
    secured_broker, tmp_path, cli
):
    config = isolated_config(
        "refused",
        kafka={**secured_broker, "sasl_password": "nope"},
        partitions=2,
        data_dir=tmp_path / "data",
    )
    line = refusal(await cli(config, "worker"))
    assert "refused user 'quota'" in line
