"""A scripted run for the ops page's tests: keys and orgs at known shares of their quota, their
triggers delivered to a webhook receiver, and one key's deliveries refused until a test lets
them through (so the dead-letter topic has something to redrive)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from pipeline.config import Settings
from pipeline.devtools.receiver import ReceivedWebhook, WebhookReceiver
from tests.integration.conftest import produce, request_count

TOKEN = "ops-token-for-tests"
#: Key -> (quota, requests): 90%, 60%, 55% and 10% of their quotas.
KEYS = {
    "ops-key-hot-0001": (100, 90),
    "ops-key-warm-0002": (200, 120),
    "ops-key-dead-0003": (100, 55),
    "ops-key-cool-0004": (1000, 100),
}
#: The key whose webhooks the receiver refuses (400: dead-lettered at once).
REFUSED = "ops-key-dead-0003"
#: Seconds of event time the load spans, ending now, and the sends it takes.
SPREAD = 1800
STEPS = 6
ORGS = {"ops-org-a": 400, "ops-org-b": 10_000}
ORG_OF = {
    "ops-key-hot-0001": "ops-org-a",
    "ops-key-warm-0002": "ops-org-a",
    "ops-key-dead-0003": "ops-org-b",
    "ops-key-cool-0004": "ops-org-b",
}


@dataclass
class Refusing:
    """Answers 400 to webhooks about the refused key while ``refusing``."""

    refusing: bool = True
    refused: list[ReceivedWebhook] = field(default_factory=list)

    def __call__(self, received: ReceivedWebhook) -> web.StreamResponse:
        if self.refusing and REFUSED.encode() in received.body:
            self.refused.append(received)
            return web.Response(status=400, text="no such hook")
        return web.Response(status=200)


def ops_config(make_config: Any, receiver: WebhookReceiver) -> dict[str, Any]:
    return make_config(
        web={"token": TOKEN},
        monitor={
            "global_trigger_limits": [50, 80],
            "configuration": {"target_path": f"{receiver.url}/monitor"},
        },
        delivery={
            "allow_networks": ["127.0.0.0/8", "::1/128"],
            "timeout": 5,
            "retry_schedule": [0.2],
        },
    )


async def load(cli: Any, settings: Settings, config: dict[str, Any]) -> None:
    """Sessions, orgs, then every key's requests, now."""
    sessions = {
        key: {"org_id": ORG_OF[key], "quota_max": quota, "quota_renewal_rate": 3600}
        for key, (quota, _) in KEYS.items()
    }
    orgs = {
        org: {"org_id": org, "quota_max": quota, "quota_renewal_rate": 3600}
        for org, quota in ORGS.items()
    }
    for kind, entries in (("sessions", sessions), ("orgs", orgs)):
        status, _, err = await cli(config, kind, "put", "-", stdin=orjson.dumps(entries))
        assert status == 0, err
    # Over the last SPREAD seconds, in a few sends: a chart with a slope, not a step.
    start = time.time() - SPREAD
    for step in range(STEPS):
        await produce(
            settings.kafka.bootstrap_servers,
            settings.topics.requests,
            [
                request_count(key, start + SPREAD * i / requests, org=ORG_OF[key])
                for key, (_, requests) in KEYS.items()
                for i in range(requests)
                if i * STEPS // requests == step
            ],
        )


#: The triggers the load fires: (key, limit) for each key's thresholds reached.
EXPECTED_KEY_TRIGGERS = {
    (key, limit)
    for key, (quota, requests) in KEYS.items()
    for limit in (50, 80)
    if requests * 100 >= limit * quota
}
