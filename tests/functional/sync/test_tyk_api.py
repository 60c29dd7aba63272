"""The Tyk Gateway client against the stand-in gateway (a real aiohttp server on loopback):
listing, fetching, keys gone mid-sync, hashed keys, orgs, the concurrency bound, and the
one-line errors of a wrong secret, an unreachable or wrong URL and a slow gateway."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from pipeline.config import Settings, TykSettings
from pipeline.devtools.local import free_port
from pipeline.devtools.receiver import WebhookReceiver
from pipeline.devtools.tyk_gateway import TykGatewayStandIn, stand_in_hash
from pipeline.errors import GatewayUnavailable
from pipeline.sync.run import fetch
from pipeline.sync.tyk_api import TykGateway

SECRET = "gateway-secret-1234"
SESSION = {"org_id": "acme", "quota_max": 1000, "quota_renewal_rate": 3600}


@pytest.fixture
async def gateway() -> AsyncIterator[TykGatewayStandIn]:
    async with TykGatewayStandIn(SECRET) as server:
        yield server


def settings(url: str, secret: str = SECRET, **fields: Any) -> TykSettings:
    return TykSettings(gateway_url=url, gateway_secret=secret, **fields)


async def fetch_all(tyk: TykSettings) -> tuple[dict[str, dict[str, Any]], int]:
    found: dict[str, dict[str, Any]] = {}
    async with TykGateway(tyk) as client:
        keys = await client.list_keys()
        gone = await client.fetch_sessions(keys, found.__setitem__)
    return found, gone


async def one_line_error(tyk: TykSettings) -> str:
    with pytest.raises(GatewayUnavailable) as raised:
        await fetch_all(tyk)
    message = str(raised.value)
    assert "\n" not in message
    assert SECRET not in message
    return message


async def test_lists_and_fetches_every_session(gateway: TykGatewayStandIn) -> None:
    sessions = {f"key-{i}": {**SESSION, "quota_max": i} for i in range(50)}
    sessions["with/slash and space"] = SESSION
    for key, session in sessions.items():
        gateway.put_session(key, session)

    found, gone = await fetch_all(settings(gateway.url))

    assert found == sessions
    assert gone == 0


async def test_a_key_deleted_after_the_listing_is_gone_not_an_error(
    gateway: TykGatewayStandIn,
) -> None:
    for i in range(5):
        gateway.put_session(f"key-{i}", SESSION)
    gateway.after_listing = lambda: gateway.delete_session("key-3")

    found, gone = await fetch_all(settings(gateway.url))

    assert sorted(found) == ["key-0", "key-1", "key-2", "key-4"]
    assert gone == 1


async def test_at_most_concurrency_requests_are_in_flight(gateway: TykGatewayStandIn) -> None:
    for i in range(200):
        gateway.put_session(f"key-{i}", SESSION)
    gateway.latency = 0.01

    found, _ = await fetch_all(settings(gateway.url, concurrency=4))

    assert len(found) == 200
    assert gateway.requests == 200
    assert gateway.max_in_flight == 4


async def test_hashed_keys_are_listed_and_fetched_as_hashes() -> None:
    async with TykGatewayStandIn(SECRET, hash_keys=True) as gateway:
        gateway.put_session("raw-key-1", SESSION)
        found, _ = await fetch_all(settings(gateway.url, hashed_keys=True))
    assert found == {stand_in_hash("raw-key-1"): SESSION}


async def test_hashed_listing_disabled_says_to_enable_it() -> None:
    async with TykGatewayStandIn(SECRET, hash_keys=True, hashed_listing=False) as gateway:
        gateway.put_session("raw-key-1", SESSION)
        message = await one_line_error(settings(gateway.url, hashed_keys=True))
    assert "enable_hashed_keys_listing" in message


async def test_hashed_keys_asked_of_a_gateway_that_does_not_hash(
    gateway: TykGatewayStandIn,
) -> None:
    gateway.put_session("key-1", SESSION)
    message = await one_line_error(settings(gateway.url, hashed_keys=True))
    assert "does not hash keys" in message
    assert "tyk.hashed_keys" in message


async def test_a_wrong_secret_is_one_line_naming_the_setting(gateway: TykGatewayStandIn) -> None:
    message = await one_line_error(settings(gateway.url, secret="not-the-secret"))
    assert message.startswith(f"the Tyk Gateway at {gateway.url} refused the secret (403 ")
    assert "set tyk.gateway_secret or QP_TYK__GATEWAY_SECRET" in message
    assert "not-the-secret" not in message


async def test_an_unreachable_gateway_is_one_line() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    message = await one_line_error(settings(url))
    assert message.startswith(f"cannot reach the Tyk Gateway at {url}: ")


async def test_no_url_is_one_line() -> None:
    with pytest.raises(GatewayUnavailable, match=r"set tyk\.gateway_url or QP_TYK__GATEWAY_URL"):
        TykGateway(TykSettings(gateway_secret=SECRET))


async def test_user_and_password_in_the_url_are_never_shown(gateway: TykGatewayStandIn) -> None:
    url = gateway.url.replace("http://", "http://admin:hunter2@")
    message = await one_line_error(settings(url, secret="wrong"))
    assert "hunter2" not in message
    assert gateway.url in message


async def test_an_answer_that_is_not_json_is_one_line() -> None:
    html = web.Response(text="<html>a portal</html>", content_type="text/html")
    async with WebhookReceiver(responder=lambda _: html) as portal:
        message = await one_line_error(settings(portal.url))
    assert "something other than JSON (200, text/html)" in message
    assert "tyk.gateway_url" in message


async def test_a_slow_gateway_is_one_line(gateway: TykGatewayStandIn) -> None:
    gateway.put_session("key-1", SESSION)
    gateway.latency = 1.0
    message = await one_line_error(settings(gateway.url, timeout=0.1))
    assert "did not answer GET /tyk/keys/{key} within 0.1 s" in message


async def test_orgs_are_listed_and_fetched(gateway: TykGatewayStandIn) -> None:
    gateway.put_org("acme", {"quota_max": 100})
    gateway.put_org("globex", {"quota_max": 200})
    found: dict[str, dict[str, Any]] = {}
    async with TykGateway(settings(gateway.url)) as client:
        listed = await client.list_orgs()
        assert listed is not None
        missing = await client.fetch_orgs([*listed, "initech"], found.__setitem__)
    assert found == {"acme": {"quota_max": 100}, "globex": {"quota_max": 200}}
    assert missing == 1


async def test_no_org_listing_is_none() -> None:
    async with TykGatewayStandIn(SECRET, org_listing=False) as gateway:
        gateway.put_org("acme", {"quota_max": 100})
        async with TykGateway(settings(gateway.url)) as client:
            assert await client.list_orgs() is None


async def test_hashes_fetched_as_keys_stop_the_pass_before_anything_is_tombstoned() -> None:
    """A hashing gateway answers "Key not found" to each listed hash asked for as a key: the
    pass stops and names tyk.hashed_keys, rather than tombstone every synced session."""
    async with TykGatewayStandIn(SECRET, hash_keys=True) as gateway:
        for i in range(3):
            gateway.put_session(f"raw-key-{i}", SESSION)
        config = {"tyk": {"gateway_url": gateway.url, "gateway_secret": SECRET}}
        settings_ = Settings.model_validate(config)
        async with TykGateway(settings_.tyk) as client:
            with pytest.raises(GatewayUnavailable, match=r"set tyk\.hashed_keys to true"):
                await fetch(settings_, client, progress=False)


async def test_orgs_of_the_key_sessions_are_fetched_when_orgs_are_not_listed() -> None:
    async with TykGatewayStandIn(SECRET, org_listing=False) as gateway:
        gateway.put_session("k1", {**SESSION, "org_id": "acme"})
        gateway.put_session("k2", {**SESSION, "org_id": "globex"})
        gateway.put_session("k3", {**SESSION, "org_id": ""})
        gateway.put_org("acme", {"quota_max": 100})
        settings_ = Settings.model_validate(
            {"tyk": {"gateway_url": gateway.url, "gateway_secret": SECRET}}
        )
        async with TykGateway(settings_.tyk) as client:
            sessions, orgs = await fetch(settings_, client, progress=False)
    assert sorted(sessions) == ["k1", "k2", "k3"]
    assert orgs == {"acme": {"quota_max": 100}}  # globex has no org session: left alone
