"""deploy/kafka-local's other modes, each a real broker of its own on free ports in a temp folder:
KAFKA_SECURITY=sasl_ssl (TLS + SCRAM-SHA-512 on the client port), KAFKA_NODES=3 (a three-node
KRaft cluster that survives a killed node), and the two together.

The TLS + SCRAM broker and the cluster start once for the whole session (conftest.py), shared
with the tests of the pipeline on them; the tests that stop them are marked
``stops_shared_broker`` and run last. The TLS + SCRAM cluster is this module's own."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError
from aiokafka.helpers import create_ssl_context

from tests.integration.brokers import Broker, start_broker

# Starting a broker (three JVMs for a cluster) happens in the first test of each mode.
pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def sasl_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    broker = start_broker(
        tmp_path_factory, "kafka-sasl-cluster", nodes=3, KAFKA_SECURITY="sasl_ssl"
    )
    yield broker
    broker.run("stop")


def tls_scram(settings: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    """aiokafka client arguments from a client.json "kafka" section."""
    return {
        "bootstrap_servers": settings["bootstrap_servers"],
        "security_protocol": settings["security_protocol"],
        "sasl_mechanism": settings["sasl_mechanism"],
        "sasl_plain_username": settings["sasl_username"],
        "sasl_plain_password": settings["sasl_password"],
        "ssl_context": create_ssl_context(cafile=settings["ssl_cafile"]),
        **overrides,
    }


async def create_topic(client: dict[str, Any], replication_factor: int = 1) -> str:
    topic = f"modes-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(**client)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(topic, num_partitions=1, replication_factor=replication_factor)]
        )
    finally:
        await admin.close()
    return topic


async def produce_and_consume(client: dict[str, Any], topic: str, value: bytes) -> None:
    """Produce ``value`` with acks=all, then read the topic from the start until it shows up."""
    producer = AIOKafkaProducer(**client, acks="all", request_timeout_ms=60_000)
    await producer.start()
    try:
        await producer.send_and_wait(topic, value, key=b"key")
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(
        topic, **client, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    try:
        async with asyncio.timeout(60):
            seen: list[bytes] = []
            while value not in seen:
                batch = await consumer.getmany(timeout_ms=500)
                seen.extend(record.value for records in batch.values() for record in records)
    finally:
        await consumer.stop()


async def refused(client: dict[str, Any]) -> KafkaConnectionError:
    """The error a client with these arguments gets; the test fails if it connects instead."""
    producer = AIOKafkaProducer(**client, request_timeout_ms=10_000)
    try:
        with pytest.raises(KafkaConnectionError) as error:
            async with asyncio.timeout(60):
                await producer.start()
    finally:
        await producer.stop()
    return error.value


def listening_ports(pid: int) -> set[int]:
    """The TCP ports process ``pid`` listens on (Linux /proc)."""
    sockets = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue  # closed meanwhile
        if target.startswith("socket:["):
            sockets.add(target[len("socket:[") : -1])
    ports = set()
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in sockets:  # 0A: LISTEN
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def wait_gone(pid: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while Path(f"/proc/{pid}").exists():
        assert time.monotonic() < deadline, f"process {pid} still there after {timeout}s"
        time.sleep(0.1)  # poll interval


def port_closed(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


# --- KAFKA_SECURITY=sasl_ssl ---------------------------------------------------------------


def test_sasl_ssl_writes_a_client_config(sasl_broker: Broker):
    data = sasl_broker.data
    assert "client config" in sasl_broker.started.stdout
    config = json.loads((data / "client.json").read_text())
    assert list(config) == ["kafka"]
    settings = dict(config["kafka"])
    password = settings.pop("sasl_password")
    assert settings == {
        "bootstrap_servers": f"127.0.0.1:{sasl_broker.port}",
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_username": "quota",
        "ssl_cafile": str(data / "tls" / "ca.pem"),
    }
    assert len(password) >= 32
    assert (data / "secrets" / "quota.password").read_text().strip() == password
    assert Path(settings["ssl_cafile"]).is_absolute()
    assert Path(settings["ssl_cafile"]).read_text().startswith("-----BEGIN CERTIFICATE-----")
    properties = (data / "client.properties").read_text()
    assert "security.protocol=SASL_SSL" in properties
    assert "sasl.mechanism=SCRAM-SHA-512" in properties
    assert f'username="quota" password="{password}"' in properties
    secret_files = [
        data / "client.json",
        data / "client.properties",
        data / "server.properties",
        data / "tls" / "broker.p12",
        *(data / "secrets").iterdir(),
    ]
    assert {path.name: mode(path) for path in secret_files} == {
        path.name: 0o600 for path in secret_files
    }
    assert mode(data / "secrets") == 0o700
    assert not (data / "tls" / "ca.key").exists()  # the CA is throwaway: it can sign no more


def test_sasl_ssl_opens_no_other_client_port(sasl_broker: Broker):
    # The SASL_SSL client port and the controller's, nothing else.
    assert listening_ports(sasl_broker.pid()) == {sasl_broker.port, sasl_broker.port + 1}


async def test_a_tls_scram_client_from_client_json_produces_and_consumes(sasl_broker: Broker):
    client = tls_scram(sasl_broker.client_settings())
    topic = await create_topic(client)
    await produce_and_consume(client, topic, b"over TLS as quota")


async def test_a_plaintext_client_is_refused(sasl_broker: Broker):
    await refused({"bootstrap_servers": f"127.0.0.1:{sasl_broker.port}"})


async def test_tls_without_scram_or_with_a_wrong_password_is_refused(sasl_broker: Broker):
    settings = sasl_broker.client_settings()
    await refused(
        {
            "bootstrap_servers": settings["bootstrap_servers"],
            "security_protocol": "SSL",
            "ssl_context": create_ssl_context(cafile=settings["ssl_cafile"]),
        }
    )
    await refused(tls_scram(settings, sasl_plain_password="not-" + settings["sasl_password"]))


async def test_a_restart_reuses_the_certificates_and_the_password(sasl_broker: Broker):
    kept = ["tls/ca.pem", "tls/broker.p12", "secrets/quota.password", "client.json"]
    before = {name: (sasl_broker.data / name).read_bytes() for name in kept}
    stopped = await asyncio.to_thread(sasl_broker.run, "stop")
    assert stopped.returncode == 0, stopped.stderr
    started = await asyncio.to_thread(sasl_broker.run, "start")
    assert started.returncode == 0, started.stdout + started.stderr
    assert "making a throwaway CA" not in started.stderr
    assert {name: (sasl_broker.data / name).read_bytes() for name in kept} == before
    client = tls_scram(sasl_broker.client_settings())
    await produce_and_consume(client, await create_topic(client), b"after a restart")


@pytest.mark.stops_shared_broker
def test_sasl_ssl_stop_leaves_no_process(sasl_broker: Broker):
    pid = sasl_broker.pid()
    stopped = sasl_broker.run("stop")
    assert stopped.returncode == 0
    assert "stopped" in stopped.stdout
    assert not Path(f"/proc/{pid}").exists()
    assert sasl_broker.run("status").returncode == 1
    assert port_closed(sasl_broker.port)


# --- KAFKA_NODES=3 ---------------------------------------------------------------------------


def test_a_cluster_starts_three_nodes(cluster: Broker):
    for node in (1, 2, 3):
        assert f"node {node} running on 127.0.0.1:{cluster.node_port(node)}" in (
            cluster.started.stdout
        )
    status = cluster.run("status")
    assert status.returncode == 0, status.stdout
    assert [line.split(" on ")[0] for line in status.stdout.splitlines()] == [
        f"kafka-local: node {node} running" for node in (1, 2, 3)
    ]
    assert not (cluster.data / "broker.pid").exists()
    cluster_ids = set()
    for node in (1, 2, 3):
        properties = (cluster.node_data(node) / "server.properties").read_text().splitlines()
        assert f"node.id={node}" in properties
        assert "min.insync.replicas=2" in properties
        assert "offsets.topic.replication.factor=3" in properties
        meta = (cluster.node_data(node) / "kraft" / "meta.properties").read_text().splitlines()
        cluster_ids |= {line for line in meta if line.startswith("cluster.id=")}
        assert listening_ports(cluster.pid(node)) == {
            cluster.node_port(node),
            cluster.node_port(node) + 1,
        }
    assert len(cluster_ids) == 1


async def test_a_cluster_replicates_to_three_nodes(cluster: Broker):
    client = {"bootstrap_servers": cluster.bootstrap_servers()}
    topic = await create_topic(client, replication_factor=3)
    await produce_and_consume(client, topic, b"three copies")


async def test_a_killed_node_is_seen_and_started_again(cluster: Broker):
    everyone = {"bootstrap_servers": cluster.bootstrap_servers()}
    topic = await create_topic(everyone, replication_factor=3)
    pid = cluster.pid(2)
    killed = await asyncio.to_thread(cluster.run, "kill", "2")
    assert killed.returncode == 0, killed.stderr
    await asyncio.to_thread(wait_gone, pid)
    status = await asyncio.to_thread(cluster.run, "status")
    assert status.returncode == 1
    assert "node 2 not running" in status.stdout
    assert "node 1 running" in status.stdout
    assert "node 3 running" in status.stdout

    # Two of three nodes are a majority: the cluster still takes acks=all writes (min ISR 2)
    # through node 1 or 3, once the controller has fenced node 2 and dropped it from the ISR.
    others = {"bootstrap_servers": cluster.bootstrap_servers(1, 3)}
    await produce_and_consume(others, topic, b"with a node down")

    started = await asyncio.to_thread(cluster.run, "start")
    assert started.returncode == 0, started.stdout + started.stderr
    assert f"node 2 running on 127.0.0.1:{cluster.node_port(2)}" in started.stdout
    assert "node 1 already running" in started.stdout
    assert cluster.pid(2) != pid
    status = await asyncio.to_thread(cluster.run, "status")
    assert status.returncode == 0, status.stdout


@pytest.mark.parametrize("args", [("kill",), ("kill", "0"), ("kill", "4"), ("kill", "two")])
def test_kill_needs_a_node_of_the_cluster(cluster: Broker, args: tuple[str, ...]):
    result = cluster.run(*args)
    assert result.returncode == 2
    assert "usage" in result.stderr


@pytest.mark.stops_shared_broker
def test_a_stopped_cluster_leaves_no_process(cluster: Broker):
    pids = [cluster.pid(node) for node in (1, 2, 3)]
    stopped = cluster.run("stop")
    assert stopped.returncode == 0, stopped.stderr
    assert [line for line in stopped.stdout.splitlines() if "stopped" in line] == [
        f"kafka-local: node {node} stopped" for node in (1, 2, 3)
    ]
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists()
    status = cluster.run("status")
    assert status.returncode == 1
    assert status.stdout.count("not running") == 3
    assert all(port_closed(cluster.node_port(node)) for node in (1, 2, 3))


# --- KAFKA_SECURITY=sasl_ssl with KAFKA_NODES=3 --------------------------------------------------


async def test_a_sasl_ssl_cluster_serves_tls_scram_clients(sasl_cluster: Broker):
    settings = sasl_cluster.client_settings()
    assert settings["bootstrap_servers"] == sasl_cluster.bootstrap_servers(1, 2, 3)
    client = tls_scram(settings)
    await produce_and_consume(client, await create_topic(client, replication_factor=3), b"all")
    await refused({"bootstrap_servers": settings["bootstrap_servers"]})
    for node in (1, 2, 3):
        assert listening_ports(sasl_cluster.pid(node)) == {
            sasl_cluster.node_port(node),
            sasl_cluster.node_port(node) + 1,
        }
    stopped = await asyncio.to_thread(sasl_cluster.run, "stop")
    assert stopped.returncode == 0, stopped.stderr
    status = await asyncio.to_thread(sasl_cluster.run, "status")
    assert status.returncode == 1
