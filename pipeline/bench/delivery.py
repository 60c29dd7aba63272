"""`quota-pipeline bench`, delivery part: webhooks/s from one worker to local receivers.

Trigger events of ``ENDPOINTS`` orgs are produced straight into the run's quota.triggers topic,
round robin, and each org's ``trigger_event.webhook`` is a receiver of its own: so only the
delivery stage is measured, from the moment the worker is ready until the healthy receivers
have every event. The second run makes one of the endpoints hang past the delivery timeout, and
measures the rate of the others beside it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from pipeline.cli.files import publish
from pipeline.cli.topics import contract_topics
from pipeline.config import Settings
from pipeline.devtools.demo import remove_topics
from pipeline.devtools.local import WorkerProcess
from pipeline.devtools.receiver import WebhookReceiver
from pipeline.devtools.smtp_server import LocalSmtpServer
from pipeline.engine.clients import create_topics, wait_committed
from pipeline.usage.quota import Crossing
from pipeline.usage.triggers import trigger_event

#: Distinct endpoints (one org each); in the second run the first one hangs.
ENDPOINTS = 5
#: The delivery timeout of the run: the hanging endpoint costs this much per attempt.
HANGING_TIMEOUT = 2.0


@dataclass(frozen=True)
class DeliveryBench:
    deliveries: int
    endpoints: int
    #: Webhooks/s with every endpoint healthy.
    healthy_per_s: float
    #: Webhooks/s to the healthy endpoints while another one times out.
    beside_hanging_per_s: float

    @property
    def kept(self) -> float:
        return self.beside_hanging_per_s / self.healthy_per_s if self.healthy_per_s else 0.0


def org_name(index: int) -> str:
    return f"bench-hook-org-{index}"


def bench_triggers(count: int) -> list[tuple[str, bytes]]:
    """``count`` distinct key triggers, their orgs taken round robin."""
    events = []
    for i in range(count):
        key = f"bench-hook-{i}"
        crossing = Crossing(threshold=80, usage=80, period_start=0.0, period_end=3600.0, ts=1.0)
        org = org_name(i % ENDPOINTS)
        event = trigger_event("key", org_id=org, key=key, quota_max=100, crossing=crossing)
        events.append((key, orjson.dumps(event)))
    return events


@asynccontextmanager
async def hanging_endpoint() -> AsyncIterator[str]:
    """A URL whose every request outlasts the delivery timeout."""
    release = asyncio.Event()

    async def hang(request: web.Request) -> web.Response:
        await release.wait()
        return web.Response(status=200)

    app = web.Application()
    app.router.add_post("/{tail:.*}", hang)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/hook"
    finally:
        release.set()
        await runner.cleanup()


async def run_delivery_bench(base: dict[str, Any], workdir: Path, count: int) -> DeliveryBench:
    """Both runs, each with its own app id and topics derived from ``base``."""
    healthy = await one_run(base, workdir, "healthy", count, hanging=False)
    beside = await one_run(base, workdir, "hanging", count, hanging=True)
    return DeliveryBench(count, ENDPOINTS, healthy, beside)


async def one_run(
    base: dict[str, Any], workdir: Path, name: str, count: int, *, hanging: bool
) -> float:
    """Webhooks/s reaching the healthy endpoints of one run."""
    async with AsyncExitStack() as stack:
        receivers = [
            await stack.enter_async_context(WebhookReceiver())
            for _ in range(ENDPOINTS - 1 if hanging else ENDPOINTS)
        ]
        urls = [f"{receiver.url}/hook" for receiver in receivers]
        if hanging:
            urls.insert(0, await stack.enter_async_context(hanging_endpoint()))
        config = derived_config(base, name)
        settings = Settings.model_validate(config)
        await create_topics(settings, contract_topics(settings), settings.kafka.partitions)
        try:
            await load_orgs(config, workdir, settings, urls)
            await publish(settings, settings.topics.triggers, bench_triggers(count))
            # Round robin: endpoint i gets the events whose index is i modulo ENDPOINTS.
            offset = 1 if hanging else 0
            expected = [len(range(i + offset, count, ENDPOINTS)) for i in range(len(receivers))]
            rate = await timed_deliveries(
                config, workdir, f"deliveries-{name}", receivers, expected
            )
        finally:
            await remove_topics(settings)
    return rate


async def timed_deliveries(
    config: dict[str, Any],
    workdir: Path,
    name: str,
    receivers: list[WebhookReceiver],
    expected: list[int],
) -> float:
    """Start a worker and return the receivers' webhooks/s from the worker being ready (its
    partitions assigned: /readyz), not from its process answering HTTP."""
    worker = WorkerProcess(config, workdir, name=name)
    worker.start()
    try:
        await worker.wait_ready(timeout=300)
        started = time.perf_counter()
        arrivals = zip(receivers, expected, strict=True)
        await asyncio.gather(*(receiver.wait_for(n, timeout=600) for receiver, n in arrivals))
        return sum(expected) / (time.perf_counter() - started)
    finally:
        worker.stop()


async def load_orgs(
    config: dict[str, Any],
    workdir: Path,
    settings: Settings,
    urls: list[str],
    *,
    field: str = "webhook",
) -> None:
    """Publish one org per endpoint (its trigger_event ``field``), and let a worker load them
    before the timed run (as in production, where orgs are known long before their triggers)."""
    orgs = [
        (
            org_name(i),
            orjson.dumps({"quota_max": -1, "event_options": {"trigger_event": {field: url}}}),
        )
        for i, url in enumerate(urls)
    ]
    await publish(settings, settings.topics.orgs, orgs)
    worker = WorkerProcess(config, workdir, name=f"{config['app_id']}-load-orgs")
    worker.start()
    try:
        await worker.wait_healthy(timeout=300)
        await wait_committed(settings, settings.topics.orgs, len(orgs), timeout=120)
    finally:
        worker.stop()


async def run_email_bench(base: dict[str, Any], workdir: Path, count: int) -> float:
    """Emails/s from one worker to a local SMTP server: each org's trigger_event.email."""
    async with LocalSmtpServer(keep=False) as smtp:
        config = derived_config(base, "emails")
        config["email_backend"] = {
            "enable_email_notifications": True,
            "code": "smtp",
            "settings": {"SMTPAddress": smtp.address},
        }
        settings = Settings.model_validate(config)
        await create_topics(settings, contract_topics(settings), settings.kafka.partitions)
        try:
            desks = [f"desk-{i}@bench.example" for i in range(ENDPOINTS)]
            await load_orgs(config, workdir, settings, desks, field="email")
            await publish(settings, settings.topics.triggers, bench_triggers(count))
            worker = WorkerProcess(config, workdir, name="emails-timed")
            worker.start()
            try:
                await worker.wait_ready(timeout=300)
                started = time.perf_counter()
                await smtp.wait_for(count, timeout=600)
                rate = count / (time.perf_counter() - started)
            finally:
                worker.stop()
        finally:
            await remove_topics(settings)
    return rate


def derived_config(base: dict[str, Any], name: str) -> dict[str, Any]:
    """``base`` with its own app id and topics, no monitor webhook (the orgs' webhooks are the
    targets), and loopback allowed."""
    return {
        **base,
        "app_id": f"{base['app_id']}-{name}",
        "data_dir": str(Path(base["data_dir"]) / name),
        "topics": {field: f"{topic}-{name}" for field, topic in base["topics"].items()},
        "monitor": {**base["monitor"], "configuration": {}},
        "delivery": {
            "allow_networks": ["127.0.0.0/8", "::1/128"],
            "timeout": HANGING_TIMEOUT,
            "retry_schedule": [60],
        },
    }
