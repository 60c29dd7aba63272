"""deploy/kafka-local brokers started by the suite in modes other than its main broker's:
TLS + SCRAM, a three-node cluster, both. Shared by the tests of kafka-local itself and of the
pipeline on them (the fixtures are in conftest.py)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from pipeline.devtools.local import KAFKA_LOCAL, free_port

#: Seconds deploy/kafka-local may take to start its nodes: generous, for a busy 2-core CI machine.
START_TIMEOUT = 300


@dataclass
class Broker:
    """A deploy/kafka-local broker or cluster: its first port, data folder and environment."""

    port: int
    data: Path
    variables: dict[str, str]
    nodes: int = 1
    started: subprocess.CompletedProcess[str] | None = field(default=None, repr=False)

    @property
    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "KAFKA_PORT": str(self.port),
            "KAFKA_DATA": str(self.data),
            "KAFKA_START_TIMEOUT": str(START_TIMEOUT),
            **self.variables,
        }

    def must(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run a kafka-local action that has to succeed."""
        result = self.run(*args)
        assert result.returncode == 0, result.stdout + result.stderr
        return result

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(KAFKA_LOCAL), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=START_TIMEOUT + 60,
            check=False,
        )

    def node_port(self, node: int) -> int:
        return self.port + 2 * (node - 1)

    def node_data(self, node: int) -> Path:
        return self.data if self.nodes == 1 else self.data / f"node-{node}"

    def bootstrap_servers(self, *nodes: int) -> str:
        return ",".join(f"127.0.0.1:{self.node_port(n)}" for n in nodes or range(1, self.nodes + 1))

    def pid(self, node: int = 1) -> int:
        return int((self.node_data(node) / "broker.pid").read_text())

    def client_settings(self) -> dict[str, Any]:
        settings: dict[str, Any] = json.loads((self.data / "client.json").read_text())["kafka"]
        return settings


def free_ports(count: int) -> int:
    """A loopback port free now whose ``count - 1`` next ports are free too."""
    for _ in range(100):
        port = free_port()
        if port + count > 65536:
            continue
        sockets: list[socket.socket] = []
        try:
            for other in range(port + 1, port + count):
                sock = socket.socket()
                sockets.append(sock)
                sock.bind(("127.0.0.1", other))
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
        return port
    raise AssertionError(f"no run of {count} free ports found")


def start_broker(
    tmp_path_factory: pytest.TempPathFactory, name: str, nodes: int = 1, **variables: str
) -> Broker:
    """Start a broker (or cluster) on free ports in a temp folder of its own."""
    broker = Broker(
        free_ports(2 * nodes),
        tmp_path_factory.mktemp(name),
        {"KAFKA_NODES": str(nodes), **variables},
        nodes,
    )
    broker.started = broker.run("start")
    assert broker.started.returncode == 0, broker.started.stdout + broker.started.stderr
    return broker
