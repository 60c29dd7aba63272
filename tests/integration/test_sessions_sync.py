"""`quota-pipeline sessions sync` on the real broker, against the stand-in Tyk Gateway (a real
aiohttp server on loopback): what it publishes, what a second pass publishes, tombstones,
sessions put by others, orgs' event_options, watch mode, a refused secret, and a synced
session's trigger firing in a worker."""

from __future__ import annotations

import asyncio
import collections
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from pipeline.config import Settings
from pipeline.devtools.tyk_gateway import TykGatewayStandIn
from tests.integration.conftest import consume, produce, read_to_end, request_count

SECRET = "gateway-secret-1234"
SOURCE = ("quota-pipeline-source", b"tyk-sync")
T0 = 1_700_000_000.0


def tyk_session(quota_max: int = 1000, org: str = "acme", **fields: Any) -> dict[str, Any]:
    """As Tyk 5.12 answers: zero fields left out, and fields that move with every request."""
    return {
        "org_id": org,
        "quota_max": quota_max,
        "quota_renewal_rate": 3600,
        "quota_remaining": 420,
        "allowance": 1000,
        "meta_data": {"developer_email": "dev@example.com"},
        **fields,
    }


def subset(session: dict[str, Any]) -> dict[str, Any]:
    return {
        "org_id": session["org_id"],
        "quota_max": session["quota_max"],
        "quota_renewal_rate": session["quota_renewal_rate"],
        "monitor": session.get("monitor", {"trigger_limits": []}),
        "meta_data": session["meta_data"],
    }


@pytest.fixture
async def gateway() -> AsyncIterator[TykGatewayStandIn]:
    async with TykGatewayStandIn(SECRET) as server:
        yield server


@pytest.fixture
def sync_config(make_config: Callable[..., dict[str, Any]], gateway: TykGatewayStandIn) -> Any:
    return make_config(tyk={"gateway_url": gateway.url, "gateway_secret": SECRET})


async def sync(cli: Callable[..., Any], config: dict[str, Any], *args: str) -> str:
    status, out, err = await cli(config, "sessions", "sync", *args)
    assert status == 0, err
    return out.strip()


async def latest(settings: Settings, topic: str) -> dict[str, Any]:
    """Each key's latest record: (value or None, whether a sync published it)."""
    state: dict[str, Any] = {}
    for record in await read_to_end(settings.kafka.bootstrap_servers, topic):
        value = None if record.value is None else orjson.loads(record.value)
        state[record.key.decode()] = (value, SOURCE in list(record.headers))
    return state


async def test_sync_publishes_the_sessions_then_nothing_when_nothing_changed(
    cli, topics_of, sync_config, gateway
):
    settings = await topics_of(sync_config)
    sessions = {f"key-{i}": tyk_session(quota_max=100 * i) for i in range(1, 4)}
    sessions["key-1"]["monitor"] = {"trigger_limits": [80, 50]}
    for key, session in sessions.items():
        gateway.put_session(key, session)

    line = await sync(cli, sync_config)

    assert line.startswith(f"synced 3 sessions from {gateway.url}: 3 new, 0 changed, 0 gone, ")
    assert "0 unchanged; 0 orgs (0 changed) in " in line
    assert await latest(settings, settings.topics.sessions) == {
        key: (subset(session), True) for key, session in sessions.items()
    }

    gateway.put_session("key-2", {**sessions["key-2"], "quota_remaining": 7, "last_check": 9})
    line = await sync(cli, sync_config)

    assert "3 sessions" in line
    assert "0 new, 0 changed, 0 gone, 3 unchanged" in line
    records = await read_to_end(settings.kafka.bootstrap_servers, settings.topics.sessions)
    assert len(records) == 3


async def test_a_changed_quota_and_a_deleted_key_give_one_record_and_one_tombstone(
    cli, topics_of, sync_config, gateway
):
    settings = await topics_of(sync_config)
    for key in ("keep", "change", "delete"):
        gateway.put_session(key, tyk_session())
    await sync(cli, sync_config)

    gateway.put_session("change", tyk_session(quota_max=5000))
    gateway.delete_session("delete")
    line = await sync(cli, sync_config)

    assert "synced 3 sessions" in line
    assert "0 new, 1 changed, 1 gone, 1 unchanged" in line
    records = await read_to_end(settings.kafka.bootstrap_servers, settings.topics.sessions)
    per_key = collections.Counter(record.key.decode() for record in records)
    assert per_key == {"keep": 1, "change": 2, "delete": 2}  # the second pass sent two
    state = await latest(settings, settings.topics.sessions)
    assert state["change"] == (subset(tyk_session(quota_max=5000)), True)
    assert state["delete"] == (None, True)


async def test_sessions_put_by_hand_are_not_tombstoned_and_overwritten_when_tyk_differs(
    cli, topics_of, sync_config, gateway
):
    settings = await topics_of(sync_config)
    by_hand = {"org_id": "acme", "quota_max": 10, "quota_renewal_rate": 60}
    put = {"only-by-hand": by_hand, "also-in-tyk": by_hand}
    status, _, err = await cli(sync_config, "sessions", "put", "-", stdin=orjson.dumps(put))
    assert status == 0, err
    gateway.put_session("also-in-tyk", tyk_session(quota_max=999))

    line = await sync(cli, sync_config)

    assert "0 new, 1 changed, 0 gone, 0 unchanged" in line
    state = await latest(settings, settings.topics.sessions)
    assert state["only-by-hand"] == (by_hand, False)
    assert state["also-in-tyk"] == (subset(tyk_session(quota_max=999)), True)


async def test_orgs_take_tyk_quotas_and_keep_their_event_options(
    cli, topics_of, sync_config, gateway
):
    settings = await topics_of(sync_config)
    options = {"trigger_event": {"webhook": "https://hooks.example.com/acme"}}
    org = {"quota_max": 100, "quota_renewal_rate": 60, "event_options": options}
    status, _, err = await cli(sync_config, "orgs", "put", "-", stdin=orjson.dumps({"acme": org}))
    assert status == 0, err
    gateway.put_session("key-1", tyk_session(org="acme"))
    gateway.put_org("acme", {"org_id": "acme", "quota_max": 500, "quota_renewal_rate": 3600})
    gateway.org_listing = False  # as in RPC mode: the orgs of the key sessions are asked for

    line = await sync(cli, sync_config)

    assert "1 orgs (1 changed)" in line
    orgs = await latest(settings, settings.topics.orgs)
    assert orgs["acme"] == (
        {
            "quota_max": 500,
            "quota_renewal_rate": 3600,
            "monitor": {"trigger_limits": []},
            "event_options": options,
        },
        True,
    )
    assert "1 orgs (0 changed)" in await sync(cli, sync_config)


async def test_watch_picks_up_a_change_and_ends_cleanly_on_ctrl_c(
    topics_of, sync_config, gateway, tmp_path: Path
):
    settings = await topics_of(sync_config)
    gateway.put_session("key-1", tyk_session())
    path = tmp_path / "watch.json"
    path.write_bytes(orjson.dumps(sync_config))
    env = {k: v for k, v in os.environ.items() if not k.startswith("QP_")}
    process = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "pipeline", "--config", str(path)),
        *("sessions", "sync", "--watch", "0.2"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    try:
        bootstrap, topic = settings.kafka.bootstrap_servers, settings.topics.sessions
        await consume(bootstrap, topic, until=lambda records: len(records) >= 1)
        gateway.put_session("key-1", tyk_session(quota_max=77))
        records = await consume(bootstrap, topic, until=lambda records: len(records) >= 2)
        assert orjson.loads(records[1].value)["quota_max"] == 77
        # The pass that published it says so once it ends: Ctrl-C only after its line.
        assert process.stdout is not None
        lines: list[str] = []
        async with asyncio.timeout(30):
            while not any("1 changed" in line for line in lines):
                lines.append((await process.stdout.readline()).decode())
    finally:
        process.send_signal(signal.SIGINT)
        out, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0, err
    lines += out.decode().splitlines()
    assert "1 new" in lines[0]
    assert any("1 changed" in line for line in lines[1:])


async def test_a_wrong_secret_is_one_line_and_status_2(cli, make_config, topics_of, gateway):
    config = make_config(tyk={"gateway_url": gateway.url, "gateway_secret": "wrong-secret"})
    await topics_of(config)

    status, out, err = await cli(config, "sessions", "sync")

    assert status == 2
    assert out == ""
    assert err.count("\n") == 1
    assert "refused the secret (403 " in err
    assert "QP_TYK__GATEWAY_SECRET" in err
    assert "wrong-secret" not in err


async def test_a_synced_session_fires_its_trigger_in_a_worker(
    cli, topics_of, sync_config, gateway, start_worker
):
    settings = await topics_of(sync_config)
    gateway.put_session("synced-key", tyk_session(quota_max=10, monitor={"trigger_limits": [30]}))
    await sync(cli, sync_config)
    await start_worker(sync_config)

    await produce(
        settings.kafka.bootstrap_servers,
        settings.topics.requests,
        [request_count("synced-key", T0 + i, org="acme") for i in range(3)],
    )

    def fired(records: list[Any]) -> bool:
        return any(orjson.loads(r.value)["key"] == "synced-key" for r in records)

    records = await consume(
        settings.kafka.bootstrap_servers, settings.topics.triggers, until=fired, timeout=90
    )
    events = [
        orjson.loads(r.value) for r in records if orjson.loads(r.value)["key"] == "synced-key"
    ]
    assert [(e["trigger_limit"], e["quota_max"], e["usage"]) for e in events] == [("30", 10, 3)]
