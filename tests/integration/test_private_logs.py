"""A worker at --loglevel debug, through triggers, webhooks, emails, portal events and the HTTP
API: its log holds no raw key, no email address, no token and no secret. And its web port
serves none of faust's own pages."""

from __future__ import annotations

import base64
import time

import aiohttp
import orjson
import pytest

from pipeline.devtools.smtp_server import LocalSmtpServer
from tests.integration.conftest import produce, request_count

TOKEN = "tok-" + "9f2c" * 8
SECRET_BYTES = b"a-signing-secret-of-32-bytes-ok!"
SECRET = "whsec_" + base64.b64encode(SECRET_BYTES).decode()
SMTP_PASSWORD = "smtp-password-7c1e"
KEYS = ["rawkey-5d8e1f0a9b", "rawkey-77aa13cc02"]
DEVELOPER = "dev.person@example.com"
ORG_DESK = "quota-desk@acme.example"
PORTAL_DEVELOPER = "applicant@example.org"


@pytest.fixture
async def smtp():
    async with LocalSmtpServer() as server:
        yield server


async def test_a_debug_level_run_logs_no_key_address_token_or_secret(
    make_config, cli, topics_of, start_worker, receiver, smtp
):
    config = make_config(
        monitor={"configuration": {"target_path": f"{receiver.url}/hook?token=in-the-url"}},
        email_backend={
            "enable_email_notifications": True,
            "code": "smtp",
            "settings": {"SMTPAddress": smtp.address, "SMTPPassword": SMTP_PASSWORD},
        },
        delivery={"signing_secrets": [SECRET]},
        web={"token": TOKEN},
    )
    settings = await topics_of(config)
    orgs = {
        "acme": {
            "quota_max": 4,
            "event_options": {
                "trigger_event": {"email": ORG_DESK, "webhook": f"{receiver.url}/org"},
                "key_request_event": {"email": ORG_DESK},
            },
        }
    }
    assert (await cli(config, "orgs", "put", "-", stdin=orjson.dumps(orgs)))[0] == 0
    worker = await start_worker(config, loglevel="debug")
    await worker.wait_ready()
    # Requests before their sessions (held), then the sessions, then more requests.
    now = time.time()
    await produce(
        settings.kafka.bootstrap_servers,
        settings.topics.requests,
        [request_count(key, now, 1, org="acme") for key in KEYS],
    )
    sessions = {
        key: {
            "org_id": "acme",
            "quota_max": 2,
            "quota_renewal_rate": 0,
            "meta_data": {"developer_email": DEVELOPER},
        }
        for key in KEYS
    }
    assert (await cli(config, "sessions", "put", "-", stdin=orjson.dumps(sessions)))[0] == 0
    await produce(
        settings.kafka.bootstrap_servers,
        settings.topics.requests,
        [request_count(key, now + 1, 1, org="acme") for key in KEYS]
        + [(b"rawkey-mismatch-0001", orjson.dumps({"ts": now, "org_id": "acme", "key": KEYS[0]}))],
    )
    portal = {
        "event": "key_request_event.submitted",
        "org_id": "acme",
        "data": {"portal_developer": {"email": PORTAL_DEVELOPER}, "key_id": KEYS[0]},
    }
    await produce(
        settings.kafka.bootstrap_servers,
        settings.topics.portal_events,
        [(b"acme", orjson.dumps(portal))],
    )
    # Key triggers (50 and 100 for each key, to two webhooks), the org's (50, 100).
    await receiver.wait_for(10, timeout=90)
    await smtp.wait_for(6, timeout=60)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with aiohttp.ClientSession(headers=headers) as http:
        async with http.get(f"{worker.web_url}/quota/{KEYS[0]}") as response:
            assert response.status == 200
        for page in ("/table/sessions/", f"/table/sessions/{KEYS[0]}/", "/router/", "/"):
            async with http.get(f"{worker.web_url}{page}") as response:
                assert response.status == 404, page
    worker.stop()

    log = worker.log_text()
    assert "[DEBUG]" in log  # the run did log at debug level
    assert "rejected record" in log  # the mismatched record
    # One start line says what the worker monitors and where deliveries go, target by host.
    [start] = [line for line in log.splitlines() if " worker of qp-" in line]
    assert "monitoring keys and orgs (global limits 50/80%" in start
    assert f"webhooks to {receiver.url} (signed) and each org's own" in start
    assert f"email through smtp {smtp.address}" in start
    for secret in (
        *KEYS,
        "rawkey-mismatch-0001",
        DEVELOPER,
        ORG_DESK,
        PORTAL_DEVELOPER,
        TOKEN,
        SECRET,
        base64.b64encode(SECRET_BYTES).decode(),
        SMTP_PASSWORD,
        "token=in-the-url",
    ):
        assert secret not in log, f"{secret} reached the log"
