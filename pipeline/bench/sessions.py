"""`quota-pipeline bench`, sessions part: `sessions sync` of N sessions from the stand-in Tyk
Gateway (a process of its own, on the second core), a second pass after 1% of them changed,
and how fast one worker applies N sessions.

It uses the topics of ``config`` (created here if missing) and a second set of its own for the
worker's part, and deletes both when it ends.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import aiohttp
import orjson

from pipeline.bench.usage import start_workers, stop_workers
from pipeline.cli.topics import contract_topics
from pipeline.config import Settings, TykSettings
from pipeline.devtools.demo import remove_topics
from pipeline.devtools.local import free_port
from pipeline.devtools.tyk_gateway import generated_key, generated_session
from pipeline.engine.clients import create_topics, wait_committed
from pipeline.sync.changes import encode_session
from pipeline.sync.run import PassReport, publish, sync_pass
from pipeline.sync.tyk_api import TykGateway

SECRET = "bench-gateway-secret"  # noqa: S105 - the stand-in's, for one run
#: One session in CHANGE_EVERY changes between the passes: 1%.
CHANGE_EVERY = 100
#: Requests in flight against the stand-in: its one process is saturated well before this.
CONCURRENCY = 64


@dataclass(frozen=True)
class SessionsBenchResult:
    sessions: int
    #: The first pass, from reading the (empty) topics to the last acknowledgement.
    full_seconds: float
    #: Its listing and fetching (one GET per key), its diff (each new session checked as the
    #: worker reads it), and its publishing alone.
    fetch_seconds: float
    diff_seconds: float
    publish_seconds: float
    #: The second pass (a fresh run: it reads the topics again), with 1% changed.
    changed: int
    resync_seconds: float
    #: What it published: the changed sessions only, when the sync is right.
    resync_published: int
    #: One worker applying N sessions, from the first one published to its group's commit of
    #: the last (publishing is done in a fraction of that: see worker_publish_seconds).
    worker_seconds: float
    worker_publish_seconds: float

    @property
    def fetch_per_s(self) -> float:
        return self.sessions / self.fetch_seconds

    @property
    def publish_per_s(self) -> float:
        return self.sessions / self.publish_seconds

    @property
    def worker_per_s(self) -> float:
        return self.sessions / self.worker_seconds


class GatewayProcess:
    """``python -m pipeline.devtools.tyk_gateway --generate N`` in a process of its own."""

    def __init__(self, sessions: int, workdir: Path) -> None:
        self.sessions = sessions
        self.port = free_port()
        self.log_path = workdir / "tyk-gateway.log"
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def launch(self) -> None:
        self._log = self.log_path.open("ab")
        self._process = subprocess.Popen(  # noqa: S603 - our own module, fixed arguments
            [
                *(sys.executable, "-m", "pipeline.devtools.tyk_gateway"),
                *("--port", str(self.port), "--secret", SECRET),
                *("--generate", str(self.sessions)),
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )

    async def wait_ready(self, timeout: float = 600) -> None:
        """Return once it answers /hello (generating a million sessions takes a while)."""
        assert self._process is not None, "launch() it first"
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline:
                if self._process.poll() is not None:
                    raise RuntimeError(f"the stand-in gateway exited; see {self.log_path}")
                try:
                    async with session.get(f"{self.url}/hello") as response:
                        if response.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.2)  # poll interval
        raise TimeoutError(f"the stand-in gateway did not start in {timeout}s")

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.wait(30)
            self._process = None
        if self._log is not None:
            self._log.close()
            self._log = None


async def change_sessions(url: str, sessions: int) -> int:
    """Raise the quota of every CHANGE_EVERY-th session through the gateway's own API (PUT
    /tyk/keys/{key}); returns how many."""
    indexes = range(0, sessions, CHANGE_EVERY)
    connector = aiohttp.TCPConnector(limit=CONCURRENCY)
    headers = {"x-tyk-authorization": SECRET}
    async with aiohttp.ClientSession(connector=connector, headers=headers) as client:

        async def change(index: int) -> None:
            body = orjson.dumps(generated_session(index, quota_max=20_000))
            async with client.put(f"{url}/tyk/keys/{generated_key(index)}", data=body) as answer:
                answer.raise_for_status()

        for start in range(0, len(indexes), 1000):
            await asyncio.gather(*(change(i) for i in indexes[start : start + 1000]))
    return len(indexes)


def apply_config(config: dict[str, Any], workdir: Path) -> dict[str, Any]:
    """``config`` with an app id, topics and data dir of its own: the worker's part."""
    return {
        **config,
        "app_id": f"{config['app_id']}-apply",
        "topics": {name: f"{topic}-apply" for name, topic in config["topics"].items()},
        "data_dir": str(workdir / "apply-data"),
    }


async def worker_apply(config: dict[str, Any], workdir: Path, sessions: int) -> tuple[float, float]:
    """Seconds one worker takes to apply N sessions, and the seconds their publishing took.

    The worker starts on empty topics and is timed from when it is ready: from the first
    session sent to its group's commit of the last. Timing a worker started on a full topic
    from its start would count its start-up (seconds), and from the group's first commit
    would leave out the first commit interval's sessions. Here publishing runs ahead of the
    worker (a million sessions: 29 s of the worker's 50 s on 2 cores, 21 s alone), so the
    time is the worker's; on 2 cores it shares them with the publisher for that while, so the
    rate is a lower bound.
    """
    settings = Settings.model_validate(config)
    await create_topics(settings, contract_topics(settings), settings.kafka.partitions)
    values = [(generated_key(i), encode_session(generated_session(i))) for i in range(sessions)]
    try:
        workers = await start_workers([config], workdir, "sessions-apply")
        try:
            started = time.perf_counter()
            await publish(settings, [(settings.topics.sessions, values)])
            published = time.perf_counter() - started
            await wait_committed(settings, settings.topics.sessions, sessions, timeout=3600)
            seconds = time.perf_counter() - started
        finally:
            await stop_workers(workers)
    finally:
        await remove_topics(settings)
    return seconds, published


async def run_sessions_bench(
    config: dict[str, Any], workdir: Path, sessions: int
) -> SessionsBenchResult:
    """The three measures of the sessions part (see the module's docstring)."""
    settings = Settings.model_validate(config)
    await create_topics(settings, contract_topics(settings), settings.kafka.partitions)
    gateway = GatewayProcess(sessions, workdir)
    try:
        gateway.launch()
        await gateway.wait_ready()
        tyk = TykSettings(gateway_url=gateway.url, gateway_secret=SECRET, concurrency=CONCURRENCY)
        synced = settings.model_copy(update={"tyk": tyk})
        async with TykGateway(tyk) as client:
            full, _ = await sync_pass(synced, client, None)
            changed = await change_sessions(gateway.url, sessions)
            again, _ = await sync_pass(synced, client, None)
    finally:
        gateway.stop()
        await remove_topics(settings)
    _check(full, sessions, 0)
    _check(again, 0, changed)
    worker_seconds, worker_publish = await worker_apply(
        apply_config(config, workdir), workdir, sessions
    )
    return SessionsBenchResult(
        sessions=sessions,
        full_seconds=full.seconds,
        fetch_seconds=full.fetch_seconds,
        diff_seconds=full.diff_seconds,
        publish_seconds=full.publish_seconds,
        changed=changed,
        resync_seconds=again.seconds,
        resync_published=again.published,
        worker_seconds=worker_seconds,
        worker_publish_seconds=worker_publish,
    )


def _check(report: PassReport, new: int, changed: int) -> None:
    """A pass that published other than it should is a bug, not a figure."""
    got = (report.sessions.new, report.sessions.changed, len(report.sessions.tombstones))
    if got != (new, changed, 0):
        raise AssertionError(f"expected {new} new and {changed} changed sessions: {report.line()}")
