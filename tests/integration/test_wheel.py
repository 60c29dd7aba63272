"""The package as it ships: a wheel and an sdist built from the repository, the wheel installed
(not editable) in a fresh virtualenv, and used from outside the checkout.

The archives carry every file of templates/ and schemas/; the installed package renders every
email template and validates a payload of every schema (tests/integration/wheel_check.py, run
by the virtualenv's python); and its `quota-pipeline worker` gets ready on the test broker and
emails a trigger to a real SMTP server on loopback.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import tarfile
import time
import uuid
import zipfile
from collections.abc import AsyncIterator, Callable, Iterator
from fnmatch import fnmatch
from pathlib import Path
from typing import Any, NamedTuple

import orjson
import pytest

from pipeline.config import Settings
from pipeline.devtools.local import WorkerProcess
from pipeline.devtools.smtp_server import LocalSmtpServer
from pipeline.email.message import EVENT_ID_HEADER
from tests.integration.conftest import (
    LOG_TAIL_LINES,
    consume,
    produce,
    request_count,
    wait_for_table,
)

REPO = Path(__file__).resolve().parents[2]
WHEEL_CHECK = Path(__file__).resolve().parent / "wheel_check.py"
#: The folders shipped inside the package, as pipeline/<name>.
SHIPPED = ("templates", "schemas")

#: Building in the checkout leaves build/ and an egg-info behind: the build runs in a copy of
#: it without these (top-level names, then names anywhere), nor any virtualenv.
NOT_COPIED_AT_TOP = {".git", ".hypothesis", "build", "dist", "data"}
NOT_COPIED = ("__pycache__", "*.egg-info", ".*_cache", ".kafka-cache", ".kafka-data", ".venv*")

DEVELOPER = "dev@example.com"
ORG_DESK = "alerts@acme.example"
KEY = "wheel-key-5c1e"

# Building, a virtualenv and installing into it: about a minute, in the first test's setup.
pytestmark = pytest.mark.timeout(600)


class Dist(NamedTuple):
    wheel: Path
    sdist: Path
    #: The copy of the checkout they were built from.
    source: Path


def clean_env() -> dict[str, str]:
    """The environment without our settings and without anything that points Python at the
    checkout or at another virtualenv."""
    dropped = {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"}
    return {k: v for k, v in os.environ.items() if k not in dropped and not k.startswith("QP_")}


def run(command: list[str], cwd: Path, what: str) -> str:
    result = subprocess.run(  # our own build and install commands
        command, cwd=cwd, env=clean_env(), capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, f"{what} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def not_copied(folder: str, names: list[str]) -> set[str]:
    at_top = Path(folder) == REPO
    return {
        name
        for name in names
        if (at_top and name in NOT_COPIED_AT_TOP)
        or any(fnmatch(name, pattern) for pattern in NOT_COPIED)
        or (Path(folder) / name / "pyvenv.cfg").exists()
    }


def shipped_files(root: Path) -> dict[str, Path]:
    """Every file of templates/ and schemas/ under ``root``, by path relative to it."""
    return {
        path.relative_to(root).as_posix(): path
        for name in SHIPPED
        for path in sorted((root / name).rglob("*"))
        if path.is_file() and "__pycache__" not in path.parts
    }


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Dist:
    """A wheel and an sdist of a copy of the checkout (python -m build: the sdist, then the
    wheel from it), so the checkout is left as it was."""
    workdir = tmp_path_factory.mktemp("build")
    source = workdir / "quota-pipeline"
    shutil.copytree(REPO, source, ignore=not_copied, symlinks=True)
    outdir = workdir / "dist"
    run([sys.executable, "-m", "build", "--outdir", str(outdir), "."], source, "python -m build")
    [wheel] = outdir.glob("quota_pipeline-*.whl")
    [sdist] = outdir.glob("quota_pipeline-*.tar.gz")
    return Dist(wheel, sdist, source)


@pytest.fixture(scope="module")
def venv(dist: Dist, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv with the wheel installed (and jsonschema, for wheel_check.py)."""
    path = tmp_path_factory.mktemp("venv") / "venv"
    cwd = path.parent
    run([sys.executable, "-m", "venv", str(path)], cwd, "python -m venv")
    python = str(path / "bin" / "python")
    run([python, "-m", "pip", "install", str(dist.wheel), "jsonschema"], cwd, "pip install")
    return path


def test_the_wheel_and_the_sdist_ship_every_template_and_schema(dist: Dist) -> None:
    expected = shipped_files(REPO)
    assert any(name.startswith("templates/") for name in expected)
    assert any(name.startswith("schemas/") for name in expected)
    built_from = shipped_files(dist.source)
    assert sorted(built_from) == sorted(expected)

    with zipfile.ZipFile(dist.wheel) as wheel:
        in_wheel = {name: wheel.read(name) for name in wheel.namelist()}
    with tarfile.open(dist.sdist) as sdist:
        top = sdist.getnames()[0].split("/")[0]  # quota_pipeline-<version>
        in_sdist = {}
        for member in sdist.getmembers():
            if member.isfile() and (readable := sdist.extractfile(member)) is not None:
                in_sdist[member.name.removeprefix(f"{top}/")] = readable.read()

    for name, path in built_from.items():
        content = path.read_bytes()
        assert in_wheel.get(f"pipeline/{name}") == content, f"wheel: pipeline/{name}"
        assert in_sdist.get(name) == content, f"sdist: {top}/{name}"
    # The wheel's own console script and faust transport.
    [entry_points] = [name for name in in_wheel if name.endswith(".dist-info/entry_points.txt")]
    assert b"quota-pipeline = pipeline.cli.main:main" in in_wheel[entry_points]
    assert b"quota-pipeline = pipeline.engine.transport:Transport" in in_wheel[entry_points]


def test_the_installed_package_renders_every_template_and_validates_every_schema(
    venv: Path, tmp_path: Path
) -> None:
    assert not tmp_path.resolve().is_relative_to(REPO)
    result = subprocess.run(
        [str(venv / "bin" / "python"), str(WHEEL_CHECK)],
        cwd=tmp_path,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"wheel_check.py failed:\n{result.stdout}\n{result.stderr}"
    lines = result.stdout.splitlines()
    installed = Path(lines[0].removeprefix("installed: "))
    assert installed.is_relative_to(venv.resolve() / "lib"), lines[0]
    assert lines[-1] == "wheel check: OK"


class InstalledWorker(WorkerProcess):
    """``<venv>/bin/quota-pipeline --config <file> worker``: the wheel's own console script,
    run from a folder outside the checkout."""

    def __init__(self, command: Path, config: dict[str, Any], workdir: Path) -> None:
        super().__init__(config, workdir, name="installed-worker")
        self.command = command

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_bytes(orjson.dumps(self.config, option=orjson.OPT_INDENT_2))
        self._log = self.log_path.open("ab")
        self._process = subprocess.Popen(
            [str(self.command), "--config", str(self.config_path), "worker"],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=clean_env(),
            cwd=self.workdir,
            start_new_session=True,
        )


@pytest.fixture
def installed_workers(request: pytest.FixtureRequest) -> Iterator[list[InstalledWorker]]:
    """Workers a test starts: stopped after it, their logs printed when it failed."""
    workers: list[InstalledWorker] = []
    yield workers
    for worker in workers:
        worker.stop()
    call = getattr(request.node, "report_call", None)
    if call is not None and call.failed:
        for worker in workers:
            lines = worker.log_text().splitlines()[-LOG_TAIL_LINES:]
            print(f"--- last {len(lines)} lines of {worker.log_path}", *lines, sep="\n")


@pytest.fixture
async def smtp() -> AsyncIterator[LocalSmtpServer]:
    async with LocalSmtpServer(host="127.0.0.1") as server:
        yield server


async def installed_cli(
    venv: Path, config: Path, *args: str, stdin: bytes | None = None
) -> tuple[int, str]:
    """The wheel's `quota-pipeline` command, run where its config file is."""
    process = await asyncio.create_subprocess_exec(
        str(venv / "bin" / "quota-pipeline"),
        "--config",
        str(config),
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=clean_env(),
        cwd=config.parent,
    )
    out, _ = await asyncio.wait_for(process.communicate(stdin), 60)
    assert process.returncode is not None
    return process.returncode, out.decode()


async def test_a_worker_installed_from_the_wheel_emails_a_trigger(
    venv: Path,
    make_config: Callable[..., dict[str, Any]],
    tmp_path: Path,
    smtp: LocalSmtpServer,
    installed_workers: list[InstalledWorker],
) -> None:
    workdir = tmp_path / f"installed-{uuid.uuid4().hex[:6]}"
    workdir.mkdir()
    assert not workdir.resolve().is_relative_to(REPO)
    config = make_config(
        monitor={"global_trigger_limits": [50]},
        email_backend={
            "enable_email_notifications": True,
            "code": "smtp",
            "settings": {"SMTPAddress": smtp.address},
            "default_from_email": "quota@acme.example",
            "default_from_name": "Quota Alerts",
        },
    )
    config_path = workdir / "config.json"
    config_path.write_bytes(orjson.dumps(config))
    settings = Settings.model_validate(config)

    for args, stdin in [
        (("topics", "create"), None),
        (
            ("orgs", "put", "-"),
            {"acme": {"quota_max": -1, "event_options": {"trigger_event": {"email": ORG_DESK}}}},
        ),
        (
            ("sessions", "put", "-"),
            {
                KEY: {
                    "org_id": "acme",
                    "quota_max": 2,
                    "quota_renewal_rate": 0,
                    "meta_data": {"developer_email": DEVELOPER},
                }
            },
        ),
    ]:
        status, out = await installed_cli(
            venv, config_path, *args, stdin=None if stdin is None else orjson.dumps(stdin)
        )
        assert status == 0, f"quota-pipeline {' '.join(args)}: {out}"

    worker = InstalledWorker(venv / "bin" / "quota-pipeline", config, workdir)
    installed_workers.append(worker)
    worker.start()
    await worker.wait_ready()
    await wait_for_table(settings, "sessions", lambda state: KEY in state)
    # One request of a quota of 2: 50%, the global threshold.
    await produce(
        settings.kafka.bootstrap_servers,
        settings.topics.requests,
        [request_count(KEY, time.time(), 1, org="acme")],
    )

    emails = await smtp.wait_for(2, timeout=60)
    triggers = await consume(
        settings.kafka.bootstrap_servers, settings.topics.triggers, until=lambda r: len(r) >= 1
    )
    event_id = orjson.loads(triggers[0].value)["id"]
    assert sorted(rcpt for email in emails for rcpt in email.rcpt_tos) == [ORG_DESK, DEVELOPER]
    for email in emails:
        message = email.message
        assert message[EVENT_ID_HEADER] == event_id
        assert message["From"] == "Quota Alerts <quota@acme.example>"
        assert "50%" in message["Subject"]
        assert message.get_content_type() == "multipart/alternative"
        text_part, html_part = message.get_body(("plain",)), message.get_body(("html",))
        assert text_part is not None
        assert html_part is not None
        text, html = text_part.get_content(), html_part.get_content()
        assert "acme" in text
        assert "acme" in html
        assert html.lstrip().startswith("<!DOCTYPE html>")  # the shipped _layout.html
        assert KEY not in text + html
    assert worker.stop() == 0
