"""The real `quota-pipeline` command as a subprocess: help, and one-line errors with status 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

#: Nothing listens on port 1: a broker there is refused at once.
NO_BROKER = "127.0.0.1:1"

GOOD_SESSION = {
    "org_id": "org1",
    "quota_max": 1000,
    "quota_renewal_rate": 3600,
    "monitor": {"trigger_limits": [80, 60, 50]},
    "meta_data": {"developer_email": "dev@example.com"},
}

Run = Callable[..., subprocess.CompletedProcess[str]]
WriteFile = Callable[..., Path]


@pytest.fixture
def run(tmp_path: Path) -> Run:
    """Run `python -m pipeline ARGS` in an empty folder, without any QP_ variable of ours."""
    clean = {name: value for name, value in os.environ.items() if not name.startswith("QP_")}

    def run_command(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "pipeline", *args],
            cwd=tmp_path,
            env={**clean, **env},
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    return run_command


@pytest.fixture
def write_file(tmp_path: Path) -> WriteFile:
    def write(content: Any, *, name: str = "file.json") -> Path:
        path = tmp_path / name
        path.write_text(content if isinstance(content, str) else json.dumps(content))
        return path

    return write


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    """Assert the contract for errors a person can cause and return the line."""
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("quota-pipeline: error:"), result.stderr
    return lines[0]


# --- help ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [
        [],
        ["worker"],
        ["topics"],
        ["topics", "create"],
        ["sessions"],
        ["sessions", "put"],
        ["orgs"],
        ["orgs", "put"],
        ["demo"],
        ["dlq", "list"],
        ["dlq", "redrive"],
        ["replay"],
        ["bench"],
    ],
    ids=lambda command: " ".join(command) or "top",
)
def test_help(run: Run, command: list[str]) -> None:
    result = run(*command, "--help")

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(" ".join(["usage: quota-pipeline", *command]))
    assert result.stderr == ""


def test_help_lists_every_subcommand(run: Run) -> None:
    result = run("--help")

    for command in ("worker", "topics", "sessions", "orgs", "demo"):
        assert command in result.stdout


# --- bad config ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "named"),
    [
        ('{"kafka": {"bootstrap_servers": ', "not valid JSON"),
        ({"delivery": {"timeout": 5, "retry_shedule": [1, 2]}}, "delivery.retry_shedule"),
        ({"web": {"port": "abc"}}, "web.port"),
    ],
    ids=["invalid-json", "unknown-delivery-key", "port-not-a-number"],
)
def test_bad_config_file(run: Run, write_file: WriteFile, content: Any, named: str) -> None:
    config = write_file(content, name="config.json")

    result = run("--config", str(config), "topics", "create", QP_KAFKA_BOOTSTRAP=NO_BROKER)

    line = one_error_line(result)
    assert named in line
    assert "config.json" in line


@pytest.mark.parametrize(
    ("config", "said"),
    [
        (
            {"monitor": {"global_trigger_limit": 150}},
            "config.json: trigger limit 150 is outside (0, 100]",
        ),
        ({"monitor": {"global_trigger_limit": 0}}, "trigger limit 0 is outside (0, 100]"),
        ({"monitor": {"global_trigger_limits": [-5, 80]}}, "trigger limit -5 is outside (0, 100]"),
        ({"delivery": {"signing_secrets": ["nope"]}}, "whsec_ followed by base64"),
        (
            {"monitor": {"configuration": {"target_path": "ftp://hooks.example"}}},
            "is not an http(s) URL",
        ),
    ],
    ids=["limit-150", "limit-0", "negative-limit", "secret-nope", "ftp-target"],
)
def test_accepted_but_wrong_config_is_refused_at_start(
    run: Run, write_file: WriteFile, config: dict[str, Any], said: str
) -> None:
    path = write_file(config, name="config.json")

    for command in (["topics", "create"], ["worker"]):
        result = run("--config", str(path), *command, QP_KAFKA_BOOTSTRAP=NO_BROKER)
        assert said in one_error_line(result)


@pytest.mark.parametrize(
    ("variable", "value", "said"),
    [
        ("QP_DELIVERY__RETRY_SCHEDULE", "[5, 300", "QP_DELIVERY__RETRY_SCHEDULE: not valid JSON"),
        ("QP_MONITOR__GLOBAL_TRIGGER_LIMITS", "[50, x]", "QP_MONITOR__GLOBAL_TRIGGER_LIMITS"),
        ("QP_MONITOR__GLOBAL_TRIGGER_LIMIT", "101", "trigger limit 101 is outside (0, 100]"),
    ],
)
def test_a_bad_environment_override_is_one_line(
    run: Run, variable: str, value: str, said: str
) -> None:
    result = run("topics", "create", QP_KAFKA_BOOTSTRAP=NO_BROKER, **{variable: value})

    assert said in one_error_line(result)


def test_config_after_the_command_is_read(run: Run, write_file: WriteFile) -> None:
    config = write_file({"web": {"port": "abc"}}, name="after.json")

    result = run("topics", "create", "--config", str(config), QP_KAFKA_BOOTSTRAP=NO_BROKER)

    line = one_error_line(result)
    assert "web.port" in line
    assert "after.json" in line


def test_bad_config_file_named_by_qp_config(run: Run, write_file: WriteFile) -> None:
    config = write_file({"web": {"port": "abc"}}, name="config.json")

    result = run("topics", "create", QP_CONFIG=str(config), QP_KAFKA_BOOTSTRAP=NO_BROKER)

    assert "web.port" in one_error_line(result)


# --- sessions put -------------------------------------------------------------------------------


def test_sessions_put_rejects_a_bad_session_before_contacting_the_broker(
    run: Run, write_file: WriteFile
) -> None:
    sessions = write_file(
        {
            "key-good-0001": GOOD_SESSION,
            "key-bad-0002": {**GOOD_SESSION, "monitor": {"trigger_limits": [150]}},
        }
    )

    result = run("sessions", "put", str(sessions), QP_KAFKA_BOOTSTRAP=NO_BROKER)

    line = one_error_line(result)
    assert "trigger_limits" in line
    assert "150" in line
    assert "broker" not in line
    assert "key-bad-0002" not in line  # ids are masked like API keys
    assert result.stdout == ""


def test_sessions_put_reports_every_bad_entry_by_line_and_publishes_nothing(
    run: Run, write_file: WriteFile
) -> None:
    lines = [
        {"key-good-0001": GOOD_SESSION},
        {"key-bad-0002": {**GOOD_SESSION, "monitor": {"trigger_limits": [100.0001]}}},
        {"key-bad-0003": {**GOOD_SESSION, "quota_max": "lots"}},
    ]
    text = "\n".join(json.dumps(line) for line in lines) + "\nnot json\n"
    path = write_file(text, name="sessions.jsonl")

    result = run("sessions", "put", str(path), QP_KAFKA_BOOTSTRAP=NO_BROKER)

    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    first, *rest = result.stderr.splitlines()
    assert first == "quota-pipeline: error: 3 bad entries; no sessions were published:"
    assert [line.split(":")[0].strip() for line in rest] == [f"{path} line {n}" for n in (2, 3, 4)]
    assert "trigger limit 100.0001 is outside (0, 100]" in rest[0]
    assert "broker" not in result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize(
    ("target", "said"),
    [
        ({"webhook": "ftp://x"}, "'ftp://x' is not an http(s) URL"),
        ({"webhook": "not a url"}, "'not a url' is not an http(s) URL"),
        ({"email": "not-an-email"}, "'not-an-email' is not an email address"),
    ],
)
def test_orgs_put_refuses_targets_that_are_not_urls_or_addresses(
    run: Run, write_file: WriteFile, target: dict[str, str], said: str
) -> None:
    orgs = write_file({"org1": {"event_options": {"trigger_event": target}}})

    result = run("orgs", "put", str(orgs), QP_KAFKA_BOOTSTRAP=NO_BROKER)

    line = one_error_line(result)
    assert said in line
    assert "org1" in line


def test_sessions_put_of_a_missing_file(run: Run, tmp_path: Path) -> None:
    result = run("sessions", "put", str(tmp_path / "absent.json"), QP_KAFKA_BOOTSTRAP=NO_BROKER)

    assert "absent.json" in one_error_line(result)


# --- no broker ----------------------------------------------------------------------------------


def test_topics_create_without_a_broker(run: Run) -> None:
    result = run("topics", "create", QP_KAFKA_BOOTSTRAP=NO_BROKER)

    line = one_error_line(result)
    assert "broker" in line
    assert NO_BROKER in line


def test_sessions_put_of_a_valid_file_without_a_broker(run: Run, write_file: WriteFile) -> None:
    sessions = write_file({"key-good-0001": GOOD_SESSION, "key-gone-0002": None})

    result = run("sessions", "put", str(sessions), QP_KAFKA_BOOTSTRAP=NO_BROKER)

    line = one_error_line(result)
    assert "broker" in line
    assert NO_BROKER in line
    assert result.stdout == ""


def test_worker_without_a_broker_ends_with_the_error(run: Run) -> None:
    result = run("worker", QP_KAFKA_BOOTSTRAP=NO_BROKER, QP_DATA_DIR="data")

    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    last = result.stderr.splitlines()[-1]
    assert last.startswith("quota-pipeline: error:")
    assert "broker" in last


def test_worker_without_a_broker_prints_one_line(run: Run) -> None:
    result = run("worker", QP_KAFKA_BOOTSTRAP=NO_BROKER, QP_DATA_DIR="data")

    assert "broker" in one_error_line(result)
