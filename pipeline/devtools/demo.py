"""`quota-pipeline demo`: the whole pipeline on embedded defaults, webhooks and emails shown live.

It uses the broker at QP_KAFKA_BOOTSTRAP (default 127.0.0.1:9092), starting the local one from
deploy/kafka-local when nothing answers there. Every run gets its own app id and topics, and
removes its topics when it ends, so runs never see each other's traffic.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import secrets
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from rich.console import Console

from pipeline.cli.files import mask, publish
from pipeline.cli.topics import contract_topics
from pipeline.config import Settings
from pipeline.devtools.local import WorkerProcess, isolated_config, kafka_local
from pipeline.devtools.receiver import ReceivedWebhook, WebhookReceiver
from pipeline.devtools.smtp_server import LocalSmtpServer, ReceivedEmail
from pipeline.engine.clients import (
    admin_client,
    create_topics,
    probe_broker,
    producer,
)
from pipeline.errors import BrokerUnavailable

DEFAULT_BOOTSTRAP = "127.0.0.1:9092"

#: The rate the sample quotas are sized for; other rates scale them, so that thresholds cross
#: at the same times: the first within 20 s of traffic, the org's 100% after about 70 s.
BASE_RATE = 200.0
#: Quota periods last an hour: long enough to see each threshold fire once and then stay
#: quiet while usage goes on climbing.
PERIOD = 3600
#: How often the demo prints each key's and org's usage.
STATUS_EVERY = 15.0

#: Sample keys: (name, key, org, share of the traffic, session at BASE_RATE).
SAMPLE_KEYS: list[tuple[str, str, str, float, dict[str, Any]]] = [
    (
        "alice",
        "demo-key-alice",
        "acme",
        0.4,
        {
            "quota_max": 5000,
            "quota_renewal_rate": PERIOD,
            "monitor": {"trigger_limits": [50, 80, 100]},
            "meta_data": {"developer_email": "alice@example.com"},
        },
    ),
    ("bob", "demo-key-bob", "acme", 0.3, {"quota_max": 2000, "quota_renewal_rate": PERIOD}),
    # Unlimited: nothing fires for carol, but her requests count towards globex.
    ("carol", "demo-key-carol", "globex", 0.2, {"quota_max": -1, "quota_renewal_rate": PERIOD}),
    # Never renews, with limits of its own.
    (
        "dave",
        "demo-key-dave",
        "globex",
        0.1,
        {"quota_max": 2000, "quota_renewal_rate": 0, "monitor": {"trigger_limits": [25, 50]}},
    ),
]
SAMPLE_ORGS: dict[str, dict[str, Any]] = {
    "acme": {
        "quota_max": 10_000,
        "quota_renewal_rate": PERIOD,
        "event_options": {"trigger_event": {"email": "ops@acme.example"}},
    },
    "globex": {"quota_max": 6000, "quota_renewal_rate": PERIOD},
}


def scaled(quota: dict[str, Any], rate: float) -> dict[str, Any]:
    """A session or org whose quota fills at ``rate`` as the sample's does at BASE_RATE."""
    if quota["quota_max"] <= 0:
        return quota
    return {**quota, "quota_max": max(1, round(quota["quota_max"] * rate / BASE_RATE))}


def sample_sessions(rate: float) -> list[tuple[str, bytes]]:
    return [
        (key, orjson.dumps({"org_id": org, **scaled(session, rate)}))
        for _, key, org, _, session in SAMPLE_KEYS
    ]


def sample_orgs(rate: float) -> list[tuple[str, bytes]]:
    return [(org, orjson.dumps(scaled(value, rate))) for org, value in SAMPLE_ORGS.items()]


def demo_config(
    run_id: str, bootstrap: str, receiver_url: str, smtp_address: str, data_dir: Path
) -> dict[str, Any]:
    """The embedded defaults: global limits 50/80/100, the local receiver as monitor webhook,
    and email through the local SMTP server (to alice, the one developer with an address, and
    to acme's operations desk)."""
    config = isolated_config(
        f"demo-{run_id}", kafka={"bootstrap_servers": bootstrap}, partitions=2, data_dir=data_dir
    )
    config["monitor"]["configuration"] = {
        "method": "POST",
        "target_path": f"{receiver_url}/quota-alerts",
        "header_map": {"X-Demo": run_id},
    }
    config["delivery"] = {"allow_networks": ["127.0.0.0/8", "::1/128"], "timeout": 5}
    config["email_backend"] = {
        "enable_email_notifications": True,
        "code": "smtp",
        "settings": {"SMTPAddress": smtp_address},
        "default_from_email": "quota-alerts@demo.example",
        "default_from_name": "quota-pipeline demo",
    }
    return config


#: Sample key -> the name the demo shows for it.
NAMES = {key: name for name, key, *_ in SAMPLE_KEYS}


def subject_of(event: dict[str, Any]) -> str:
    """An event's subject as the demo shows it: ``org acme``, or ``key alice (acme)``. A
    webhook's body is Tyk's, without ``subject``: there an org trigger has an empty key."""
    if event.get("subject") == "org" or not event.get("key"):
        return f"org {event.get('org')}"
    key = str(event.get("key", ""))
    return f"key {NAMES.get(key, mask(key))} ({event.get('org')})"


def delivery_line(received: ReceivedWebhook, elapsed: float) -> str:
    try:
        body = orjson.loads(received.body)
    except orjson.JSONDecodeError:
        body = {}
    return (
        f"[dim]{elapsed:6.1f}s[/] [bold green]webhook[/] {received.method} {received.path}  "
        f"{subject_of(body)} [bold]{body.get('trigger_limit')}%[/] reached "
        f"(usage {body.get('usage_percentage')}%)  [dim]id={received.headers.get('webhook-id')}[/]"
    )


def email_line(received: ReceivedEmail, elapsed: float) -> str:
    message = received.message
    return (
        f"[dim]{elapsed:6.1f}s[/] [bold blue]email[/]   to={', '.join(received.rcpt_tos)}  "
        f"{message['Subject']}  [dim]id={message['X-Quota-Pipeline-Event-Id']}[/]"
    )


def usage_entry(name: str, view: dict[str, Any]) -> str:
    """One subject's usage from the HTTP API's view: ``bob 131% (fired 50, 80, 100)``."""
    if view.get("usage_percentage") is None:
        return f"{name} unlimited ({view.get('usage', 0):,} requests)"
    fired = view.get("fired") or []
    said = f"fired {', '.join(fired)}" if fired else "none fired"
    return f"{name} {view['usage_percentage']}% ({said})"


async def ensure_broker(settings: Settings, console: Console) -> bool:
    """True when the demo had to start the local broker (and so should stop it)."""
    try:
        await probe_broker(settings, timeout=3)
    except BrokerUnavailable:
        if settings.kafka.bootstrap_servers != DEFAULT_BOOTSTRAP:
            raise
    else:
        return False
    console.print("[yellow]no broker on 127.0.0.1:9092: starting deploy/kafka-local[/]")
    await asyncio.to_thread(kafka_local, "start")
    return True


async def simulate_traffic(settings: Settings, rate: float, stop: asyncio.Event) -> int:
    """Produce RequestCounts for the sample keys at ``rate`` per second until ``stop``."""
    keys = [(key, org) for _, key, org, _, _ in SAMPLE_KEYS]
    weights = [share for *_, share, _ in SAMPLE_KEYS]
    tick = 0.1
    sent = 0
    rng = random.Random(7)  # noqa: S311 - simulated traffic, not cryptography
    async with producer(settings) as client:
        while not stop.is_set():
            for key, org in rng.choices(keys, weights, k=max(1, round(rate * tick))):
                record = {"ts": time.time(), "org_id": org, "key": key, "api_id": "demo-api"}
                await client.send(settings.topics.requests, orjson.dumps(record), key=key.encode())
                sent += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), tick)
    return sent


async def usage_views(worker: WorkerProcess, token: str) -> list[str]:
    """Each sample key's and org's usage, read from the worker's HTTP API."""
    paths = [(name, f"/quota/{key}") for name, key, *_ in SAMPLE_KEYS]
    paths += [(f"org {org}", f"/orgs/{org}/quota") for org in SAMPLE_ORGS]
    headers = {"Authorization": f"Bearer {token}"}
    entries = []
    async with aiohttp.ClientSession(headers=headers) as http:
        for name, path in paths:
            async with http.get(f"{worker.web_url}{path}") as response:
                if response.status == 200:
                    entries.append(usage_entry(name, await response.json()))
    return entries


async def show_usage(
    console: Console, worker: WorkerProcess, token: str, started: float, stop: asyncio.Event
) -> None:
    """Every STATUS_EVERY seconds, one line of each subject's usage; a last one at ``stop``."""
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), STATUS_EVERY)
        with contextlib.suppress(aiohttp.ClientError, TimeoutError):
            entries = await usage_views(worker, token)
            elapsed = time.monotonic() - started
            console.print(f"[dim]{elapsed:6.1f}s usage   {' · '.join(entries)}[/]")


async def demo(duration: float | None, rate: float, console: Console) -> int:
    run_id = str(int(time.time()))
    bootstrap = os.environ.get("QP_KAFKA_BOOTSTRAP", DEFAULT_BOOTSTRAP)
    probe_settings = Settings.model_validate({"kafka": {"bootstrap_servers": bootstrap}})
    started_broker = await ensure_broker(probe_settings, console)
    # Everything the run writes (the worker's tables, config and log) goes here, and goes away.
    workdir = tempfile.TemporaryDirectory(prefix="quota-demo-")
    started = time.monotonic()
    receiver = WebhookReceiver(
        on_request=lambda r: console.print(delivery_line(r, time.monotonic() - started))
    )
    smtp = LocalSmtpServer(
        responder=lambda e: console.print(email_line(e, time.monotonic() - started)), keep=False
    )
    await receiver.start()
    await smtp.start()
    token = secrets.token_urlsafe(16)
    config = demo_config(run_id, bootstrap, receiver.url, smtp.address, Path(workdir.name))
    config["web"]["token"] = token
    settings = Settings.model_validate(config)
    worker = WorkerProcess(config, Path(workdir.name))
    stop = asyncio.Event()
    sent = 0
    try:
        await create_topics(settings, contract_topics(settings), settings.kafka.partitions)
        await publish(settings, settings.topics.sessions, sample_sessions(rate))
        await publish(settings, settings.topics.orgs, sample_orgs(rate))
        console.print(f"[bold]quota-pipeline demo[/] run {run_id}: starting a worker")
        worker.start()
        await worker.wait_healthy()
        console.print(
            f"worker ready at {worker.web_url}; simulating {rate:g} requests/s "
            f"({'until Ctrl-C' if duration is None else f'for {duration:g}s'}); quota periods "
            f"last {PERIOD // 60} minutes, so each threshold fires once and then stays quiet"
        )
        status = asyncio.create_task(show_usage(console, worker, token, started, stop))
        traffic = asyncio.create_task(simulate_traffic(settings, rate, stop))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(traffic), duration)
        stop.set()
        sent = await traffic
        await status
    except RuntimeError:  # the worker exited early: its last lines say why
        console.print(*worker.log_text().splitlines()[-20:], sep="\n", markup=False)
        raise
    finally:
        stop.set()
        await asyncio.to_thread(worker.stop)
        await receiver.stop()
        await smtp.stop()
        await remove_topics(settings)
        if started_broker:
            await asyncio.to_thread(kafka_local, "stop")
        workdir.cleanup()
    console.print(
        f"[bold]done[/]: {sent} requests simulated, {len(receiver.received)} webhooks, "
        f"{smtp.accepted} emails"
    )
    return 0


async def remove_topics(settings: Settings) -> None:
    """Delete this run's topics (and faust's internal ones of its app id)."""
    async with admin_client(settings) as admin:
        ours = {spec.name for spec in contract_topics(settings)}
        internal = {t for t in await admin.list_topics() if t.startswith(f"{settings.app_id}-")}
        await admin.delete_topics(sorted(ours | internal))


def run_demo(*, duration: float | None, rate: float) -> int:
    """Entry point of `quota-pipeline demo`."""
    console = Console(highlight=False, soft_wrap=True)
    try:
        return asyncio.run(demo(duration, rate, console))
    except KeyboardInterrupt:
        console.print("[bold]stopped[/]")
        return 0
