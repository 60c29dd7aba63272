"""Local processes for the demo and the tests: the Kafka broker script and worker processes."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import IO, Any

import aiohttp
import orjson

from pipeline.config import TopicNames
from pipeline.errors import BrokerUnavailable

REPO_ROOT = Path(__file__).resolve().parents[2]
KAFKA_LOCAL = REPO_ROOT / "deploy" / "kafka-local"


def kafka_local(action: str, *, port: int = 9092, data: Path | None = None) -> None:
    """Run ``deploy/kafka-local start|stop`` for a broker on 127.0.0.1:port."""
    if not KAFKA_LOCAL.exists():
        raise BrokerUnavailable(f"{KAFKA_LOCAL} is missing: run from a checkout of quota-pipeline")
    env = {**os.environ, "KAFKA_PORT": str(port)}
    if data is not None:
        env["KAFKA_DATA"] = str(data)
    result = subprocess.run(  # noqa: S603 - our own script, fixed arguments
        [str(KAFKA_LOCAL), action], env=env, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        last = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
        raise BrokerUnavailable(f"deploy/kafka-local {action} failed: {last[0]}")


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def isolated_config(
    name: str, *, kafka: dict[str, Any], partitions: int, data_dir: Path
) -> dict[str, Any]:
    """A worker config with its own app id and topics (``<name>.<topic>``), every monitor
    switch on and global limits 50/80/100: runs that share a broker never see each other.
    ``kafka`` says how to reach the broker (KafkaSettings.connection)."""
    return {
        "app_id": f"qp-{name}",
        "data_dir": str(data_dir),
        "kafka": {**kafka, "partitions": partitions},
        "topics": {field: f"{name}.{topic}" for field, topic in TopicNames().model_dump().items()},
        "monitor": {
            "enable_trigger_monitors": True,
            "global_trigger_limits": [50, 80, 100],
            "monitor_user_keys": True,
            "monitor_org_keys": True,
        },
        "web": {"port": free_port()},
    }


class WorkerProcess:
    """``quota-pipeline worker`` in a process of its own, with its config in a file."""

    def __init__(
        self, config: dict[str, Any], workdir: Path, name: str = "worker", loglevel: str = "info"
    ) -> None:
        self.config = config
        self.workdir = workdir
        self.name = name
        self.loglevel = loglevel
        self.config_path = workdir / f"{name}.json"
        self.log_path = workdir / f"{name}.log"
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def web_url(self) -> str:
        return f"http://127.0.0.1:{self.config['web']['port']}"

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    @property
    def running(self) -> bool:
        """Started and not exited (nor restarted: the process is the one start() made)."""
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Launch the process; it runs until stop() or kill()."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_bytes(orjson.dumps(self.config, option=orjson.OPT_INDENT_2))
        self._log = self.log_path.open("ab")
        env = {k: v for k, v in os.environ.items() if not k.startswith("QP_")}
        self._process = subprocess.Popen(  # noqa: S603 - our own entry point
            [
                *(sys.executable, "-m", "pipeline", "--config", str(self.config_path)),
                *("worker", "--loglevel", self.loglevel),
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=self.workdir,
            start_new_session=True,  # Ctrl-C in a terminal reaches the demo, which stops us
        )

    async def wait_ready(self, timeout: float = 90) -> None:
        """Poll /readyz until it answers 200: the worker has its partitions and its tables."""
        await self.wait_healthy(timeout, page="readyz")

    async def readiness(self, session: aiohttp.ClientSession) -> tuple[bool, int | None]:
        """Whether /readyz answers 200 now, and the group generation it names."""
        self._check_running()
        try:
            async with session.get(f"{self.web_url}/readyz") as response:
                body = orjson.loads(await response.read())
                return response.status == 200, body.get("generation")
        except (aiohttp.ClientError, TimeoutError, orjson.JSONDecodeError):
            return False, None

    async def wait_healthy(self, timeout: float = 90, *, page: str = "healthz") -> None:
        """Poll /healthz (or ``page``) until it answers 200; raise if the process dies or time
        runs out."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
            while loop.time() < deadline:
                self._check_running()
                try:
                    async with session.get(f"{self.web_url}/{page}") as response:
                        if response.status == 200:
                            return
                except (aiohttp.ClientError, TimeoutError):
                    pass
                await asyncio.sleep(0.2)  # poll interval
        raise TimeoutError(f"{self.name}: no 200 from /{page} in {timeout}s; see {self.log_path}")

    def _check_running(self) -> None:
        if self._process is None or self._process.poll() is not None:
            raise RuntimeError(f"{self.name} exited early; see {self.log_path}")

    def stop(self, timeout: float = 30) -> int | None:
        """SIGTERM and wait (faust commits and closes cleanly); SIGKILL if it hangs."""
        if self._process is None:
            return None
        process, self._process = self._process, None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._close_log()
        return process.returncode

    def kill(self) -> None:
        """SIGKILL, as a crash would: nothing is flushed or committed."""
        if self._process is not None:
            self._process.kill()
            self._process.wait()
            self._process = None
        self._close_log()

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def group_settled(readings: list[tuple[bool, int | None]]) -> bool:
    """Whether workers answering ``readings`` ((ready, generation) each) share the partitions:
    all ready, in one generation. A worker still ready in an earlier generation has not yet
    been told that another joined, and keeps partitions it is about to give up."""
    generations = {generation for _, generation in readings}
    return all(ready for ready, _ in readings) and len(generations) == 1 and None not in generations


async def wait_group_settled(workers: list[WorkerProcess], timeout: float = 300) -> None:
    """Poll every worker's /readyz until :func:`group_settled`; raise if time runs out."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
        while loop.time() < deadline:
            readings = [await worker.readiness(session) for worker in workers]
            if group_settled(readings):
                return
            await asyncio.sleep(0.2)  # poll interval
    names = ", ".join(worker.name for worker in workers)
    raise TimeoutError(f"{names}: not ready in one group generation within {timeout}s")
