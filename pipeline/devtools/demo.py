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
import tempfile
import time
from pathlib import Path
from typing import Any

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

#: Sample keys: (key, org, share of the traffic, session). Quotas are small so that thresholds
#: cross within seconds at the default rate.
SAMPLE_KEYS: list[tuple[str, str, float, dict[str, Any]]] = [
    (
        "demo-key-alice",
        "acme",
        0.4,
        {
            "quota_max": 1000,
            "quota_renewal_rate": 30,
            "monitor": {"trigger_limits": [50, 80, 100]},
            "meta_data": {"developer_email": "alice@example.com"},
        },
    ),
    ("demo-key-bob", "acme", 0.3, {"quota_max": 600, "quota_renewal_rate": 20}),
    ("demo-key-carol", "globex", 0.2, {"quota_max": 0, "quota_renewal_rate": 60}),
    (
        "demo-key-dave",
        "globex",
        0.1,
        {"quota_max": 2000, "quota_renewal_rate": 0, "monitor": {"trigger_limits": [25, 50]}},
    ),
]
SAMPLE_ORGS: dict[str, dict[str, Any]] = {
    "acme": {
        "quota_max": 5000,
        "quota_renewal_rate": 60,
        "event_options": {"trigger_event": {"email": "ops@acme.example"}},
    },
    "globex": {"quota_max": 3000, "quota_renewal_rate": 60},
}


def demo_config(
    run_id: str, bootstrap: str, receiver_url: str, smtp_address: str, data_dir: Path
) -> dict[str, Any]:
    """The embedded defaults: global limits 50/80/100, the local receiver as monitor webhook,
    and email through the local SMTP server (to alice, the one developer with an address, and
    to acme's operations desk)."""
    config = isolated_config(f"demo-{run_id}", bootstrap=bootstrap, partitions=2, data_dir=data_dir)
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


def show_delivery(console: Console, started: float) -> Any:
    def show(received: ReceivedWebhook) -> None:
        try:
            body = orjson.loads(received.body)
        except orjson.JSONDecodeError:
            body = {}
        console.print(
            f"[dim]{time.monotonic() - started:6.1f}s[/] [bold green]webhook[/] "
            f"{received.method} {received.path}  org={body.get('org')} "
            f"key={mask(str(body.get('key', '')))} [bold]{body.get('trigger_limit')}%[/] "
            f"reached (usage {body.get('usage_percentage')}%)  "
            f"[dim]id={received.headers.get('webhook-id')}[/]"
        )

    return show


def show_email(console: Console, started: float) -> Any:
    def show(received: ReceivedEmail) -> None:
        message = received.message
        console.print(
            f"[dim]{time.monotonic() - started:6.1f}s[/] [bold blue]email[/]   "
            f"to={', '.join(received.rcpt_tos)}  {message['Subject']}  "
            f"[dim]id={message['X-Quota-Pipeline-Event-Id']}[/]"
        )
        # None accepts the message: the demo's server takes everything.

    return show


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
    keys = [(key, org) for key, org, _, _ in SAMPLE_KEYS]
    weights = [share for _, _, share, _ in SAMPLE_KEYS]
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


async def demo(duration: float | None, rate: float, console: Console) -> int:
    run_id = str(int(time.time()))
    bootstrap = os.environ.get("QP_KAFKA_BOOTSTRAP", DEFAULT_BOOTSTRAP)
    probe_settings = Settings.model_validate({"kafka": {"bootstrap_servers": bootstrap}})
    started_broker = await ensure_broker(probe_settings, console)
    workdir = Path(tempfile.mkdtemp(prefix="quota-demo-"))
    started = time.monotonic()
    receiver = WebhookReceiver(on_request=show_delivery(console, started))
    await receiver.start()
    smtp = LocalSmtpServer(responder=show_email(console, started), keep=False)
    await smtp.start()
    config = demo_config(run_id, bootstrap, receiver.url, smtp.address, workdir / "data")
    settings = Settings.model_validate(config)
    worker = WorkerProcess(config, workdir)
    stop = asyncio.Event()
    sent = 0
    try:
        await create_topics(settings, contract_topics(settings), settings.kafka.partitions)
        await publish(
            settings,
            settings.topics.sessions,
            [
                (key, orjson.dumps({"org_id": org, **session}))
                for key, org, _, session in SAMPLE_KEYS
            ],
        )
        await publish(
            settings,
            settings.topics.orgs,
            [(org, orjson.dumps(value)) for org, value in SAMPLE_ORGS.items()],
        )
        console.print(f"[bold]quota-pipeline demo[/] run {run_id}: worker log {worker.log_path}")
        worker.start()
        await worker.wait_healthy()
        console.print(
            f"worker ready at {worker.web_url}; simulating {rate:g} requests/s "
            f"({'until Ctrl-C' if duration is None else f'for {duration:g}s'})"
        )
        traffic = asyncio.create_task(simulate_traffic(settings, rate, stop))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(traffic), duration)
        stop.set()
        sent = await traffic
    finally:
        stop.set()
        await asyncio.to_thread(worker.stop)
        await receiver.stop()
        await smtp.stop()
        await remove_topics(settings)
        if started_broker:
            await asyncio.to_thread(kafka_local, "stop")
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
