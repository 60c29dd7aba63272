"""deploy/kafka-local against the suite's broker: status, a harmless second start."""

from __future__ import annotations

import os
import pathlib
import socket
import subprocess

from pipeline.devtools.local import KAFKA_LOCAL
from tests.integration.brokers import free_ports


def kafka_local(local_broker, action: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KAFKA_PORT": str(local_broker.port), "KAFKA_DATA": str(local_broker.data)}
    return subprocess.run(
        [str(KAFKA_LOCAL), action],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_status_reports_the_running_broker(local_broker):
    result = kafka_local(local_broker, "status")
    assert result.returncode == 0
    assert f"running on 127.0.0.1:{local_broker.port}" in result.stdout


def test_second_start_is_harmless(local_broker):
    before = (local_broker.data / "broker.pid").read_text()
    result = kafka_local(local_broker, "start")
    assert result.returncode == 0
    assert "already running" in result.stdout
    assert (local_broker.data / "broker.pid").read_text() == before


def test_status_of_a_broker_that_is_not_there_fails(local_broker, tmp_path):
    env = {**os.environ, "KAFKA_PORT": "19999", "KAFKA_DATA": str(tmp_path)}
    result = subprocess.run(
        [str(KAFKA_LOCAL), "status"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert "not running" in result.stdout


def test_unknown_action_is_a_usage_error():
    result = subprocess.run(
        [str(KAFKA_LOCAL), "restart-all"], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 2
    assert "usage" in result.stderr


def test_a_broker_started_and_stopped_leaves_no_process_behind(tmp_path):
    # Ports of its own: a fixed one failed whenever another broker (the suite's, run on
    # another QP_TEST_KAFKA_PORT, or a developer's) held it.
    port = free_ports(2)  # the client port and the controller's
    env = {**os.environ, "KAFKA_PORT": str(port), "KAFKA_DATA": str(tmp_path)}

    def run(action: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(KAFKA_LOCAL), action],
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )

    started = run("start")
    assert started.returncode == 0, started.stderr
    pid = int((tmp_path / "broker.pid").read_text())
    try:
        assert run("status").returncode == 0
    finally:
        stopped = run("stop")
    assert stopped.returncode == 0
    assert "stopped" in stopped.stdout
    assert not pathlib.Path(f"/proc/{pid}").exists()
    assert run("status").returncode == 1
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", port)) != 0
