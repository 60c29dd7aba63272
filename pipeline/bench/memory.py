"""`quota-pipeline bench`, memory part: the peak RSS of one worker holding K active keys, and
the time a restarted worker takes to recover that state from the changelogs.

Every key gets a session and one request, so the worker holds a session and a usage state for
each. Once the group's offsets are committed on both topics, the worker's peak RSS is read from
/proc (VmHWM, Linux only). Then it stops and two restarts are timed from the launch of a new
worker process until /readyz answers 200: first on the same data dir (a restarted pod with its
volume: RocksDB kept, only the changelogs' tails read), then with the data dir deleted (a new
machine: every table recovered from its changelog).
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from pipeline.bench.delivery import derived_config
from pipeline.bench.plan import PlannedRecord
from pipeline.bench.usage import USAGE_SESSION, key_name, produce_load, stop_workers
from pipeline.cli.files import publish
from pipeline.cli.topics import contract_topics
from pipeline.config import Settings
from pipeline.devtools.demo import remove_topics
from pipeline.devtools.local import WorkerProcess
from pipeline.engine.clients import create_topics, wait_committed


@dataclass(frozen=True)
class MemoryBench:
    """One worker's memory with K active keys, and its recovery after a restart."""

    active_keys: int
    #: VmHWM of the worker once every key's session and request is committed, MB (10**6 B).
    peak_rss_mb: float
    #: VmRSS at the same moment, MB.
    rss_mb: float
    #: Seconds from launching the restarted worker, its local state deleted, to /readyz.
    recovery_s: float
    #: VmHWM of the restarted worker once ready, MB.
    recovered_peak_rss_mb: float
    #: Seconds from launching a worker on the stopped one's data dir to /readyz.
    resume_s: float | None = None


def memory_of(pid: int) -> dict[str, float]:
    """VmHWM and VmRSS of a process, MB, from /proc/<pid>/status."""
    figures: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmHWM", "VmRSS"):
            kilobytes = int(value.split()[0])  # the kernel's "kB" are KiB
            figures[name] = kilobytes * 1024 / 1e6
    return figures


async def run_memory_bench(base: dict[str, Any], workdir: Path, active_keys: int) -> MemoryBench:
    """The whole memory run, with its own app id and topics derived from ``base``."""
    config = derived_config(base, "memory")
    settings = Settings.model_validate(config)
    await create_topics(settings, contract_topics(settings), settings.kafka.partitions)
    try:
        session = orjson.dumps(USAGE_SESSION)
        await publish(
            settings, settings.topics.sessions, [(key_name(i), session) for i in range(active_keys)]
        )
        worker = WorkerProcess(config, workdir, name="memory")
        worker.start()
        try:
            await worker.wait_ready(timeout=600)
            await wait_committed(settings, settings.topics.sessions, active_keys, timeout=1800)
            # One request per key, after its session: each key is active and has usage.
            plan = (PlannedRecord(key=i, org=0, requests=1) for i in range(active_keys))
            await produce_load(settings, plan)
            await wait_committed(settings, settings.topics.requests, active_keys, timeout=1800)
            assert worker.pid is not None
            loaded = memory_of(worker.pid)
        finally:
            await stop_workers([worker])
        resume, _ = await timed_restart(config, workdir, "memory-resumed")
        shutil.rmtree(config["data_dir"], ignore_errors=True)
        recovery, recovered = await timed_restart(config, workdir, "memory-restarted")
    finally:
        await remove_topics(settings)
    return MemoryBench(
        active_keys=active_keys,
        peak_rss_mb=loaded["VmHWM"],
        rss_mb=loaded["VmRSS"],
        recovery_s=recovery,
        recovered_peak_rss_mb=recovered["VmHWM"],
        resume_s=resume,
    )


async def timed_restart(
    config: dict[str, Any], workdir: Path, name: str
) -> tuple[float, dict[str, float]]:
    """Seconds from launching a worker to its /readyz, and its memory then; it is stopped."""
    restarted = WorkerProcess(config, workdir, name=name)
    started = time.perf_counter()
    restarted.start()
    try:
        await restarted.wait_ready(timeout=1800)
        seconds = time.perf_counter() - started
        assert restarted.pid is not None
        return seconds, memory_of(restarted.pid)
    finally:
        await stop_workers([restarted])
