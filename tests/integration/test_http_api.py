"""The HTTP API on a real broker and worker: bearer-token auth, POST /events, PUT and DELETE of
sessions and orgs, and GET of their quota, answered by whichever worker holds the subject."""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from aiokafka.partitioner import DefaultPartitioner

from pipeline.devtools.local import free_port
from tests.integration.conftest import produce, read_to_end, request_count

TOKEN = "api-token-for-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


class Answer:
    """One HTTP response, read."""

    def __init__(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.status = status
        self.body = body
        self.headers = headers

    @property
    def json(self) -> Any:
        return orjson.loads(self.body)

    def __repr__(self) -> str:
        return f"<{self.status} {self.body[:200]!r}>"


@pytest.fixture
async def http() -> AsyncIterator[Callable[..., Awaitable[Answer]]]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:

        async def call(method: str, url: str, *, auth: bool = True, **kwargs: Any) -> Answer:
            headers = {**(AUTH if auth else {}), **kwargs.pop("headers", {})}
            async with session.request(method, url, headers=headers, **kwargs) as response:
                return Answer(response.status, await response.read(), dict(response.headers))

        yield call


async def until(
    fetch: Callable[[], Awaitable[Answer]], done: Callable[[Answer], bool], timeout: float = 60
) -> Answer:
    """``await fetch()`` until ``done(answer)``; fail with the last answer after ``timeout``."""
    answer = None
    try:
        async with asyncio.timeout(timeout):
            while True:
                answer = await fetch()
                if done(answer):
                    return answer
                await asyncio.sleep(0.2)  # poll interval
    except TimeoutError:
        raise AssertionError(f"not done in {timeout}s; last answer {answer!r}") from None


def api_config(make_config, **sections: Any) -> dict[str, Any]:
    return make_config(web={"token": TOKEN}, **sections)


def session_body(org: str = "org1", quota_max: int = 10, **fields: Any) -> bytes:
    return orjson.dumps(
        {"org_id": org, "quota_max": quota_max, "quota_renewal_rate": 3600, **fields}
    )


async def test_every_api_route_needs_the_token_and_is_off_without_one(
    make_config, topics_of, start_worker, http
):
    config = api_config(make_config)
    settings = await topics_of(config)
    url = (await start_worker(config)).web_url
    routes = [
        ("POST", "/events"),
        ("PUT", "/sessions/k1"),
        ("DELETE", "/sessions/k1"),
        ("PUT", "/orgs/o1"),
        ("DELETE", "/orgs/o1"),
        ("GET", "/quota/k1"),
        ("GET", "/orgs/o1/quota"),
    ]
    for method, path in routes:
        missing = await http(method, url + path, auth=False, data=b"{}")
        assert missing.status == 401, (method, path, missing)
        assert missing.headers["WWW-Authenticate"].startswith("Bearer")
        assert missing.json == {"error": "missing bearer token"}
        wrong = await http(
            method, url + path, auth=False, headers={"Authorization": "Bearer nope"}, data=b"{}"
        )
        assert wrong.status == 401, (method, path, wrong)
        assert wrong.json == {"error": "invalid bearer token"}
    assert (await http("GET", f"{url}/healthz", auth=False)).status == 200
    assert (await http("GET", f"{url}/metrics", auth=False)).status == 200
    # Nothing the refused requests asked for was published.
    for topic in (settings.topics.sessions, settings.topics.orgs, settings.topics.portal_events):
        assert await read_to_end(settings.kafka.bootstrap_servers, topic) == []

    disabled = make_config()  # no web.token
    await topics_of(disabled)
    url = (await start_worker(disabled)).web_url
    for method, path in routes:
        answer = await http(method, url + path, data=b"{}")
        assert answer.status == 403, (method, path, answer)
        assert answer.json == {"error": "the HTTP API is disabled: set web.token (QP_WEB_TOKEN)"}


async def test_post_events_publishes_the_event_with_the_id_it_answers(
    make_config, topics_of, start_worker, http
):
    config = api_config(make_config)
    settings = await topics_of(config)
    url = (await start_worker(config)).web_url
    event = {
        "event": "key_request_event.submitted",
        "org_id": "org-events",
        "data": {"portal_developer": {"email": "dev@example.com"}, "extra": [1, 2]},
    }

    invalid = await http("POST", f"{url}/events", data=orjson.dumps({**event, "event": "nope"}))
    assert invalid.status == 400
    assert "unknown event 'nope'" in invalid.json["error"]
    not_json = await http("POST", f"{url}/events", data=b"{not json")
    assert (not_json.status, "not JSON" in not_json.json["error"]) == (400, True)
    over_a_mib = b" " * (1024 * 1024 + 1)
    too_large = await http("POST", f"{url}/events", data=io.BytesIO(over_a_mib))
    assert too_large.status == 413

    async def chunks() -> AsyncIterator[bytes]:  # chunked: no Content-Length to go by
        for start in range(0, len(over_a_mib), 65536):
            yield over_a_mib[start : start + 65536]

    assert (await http("POST", f"{url}/events", data=chunks())).status == 413

    accepted = await http("POST", f"{url}/events", data=orjson.dumps(event))
    assert accepted.status == 202
    event_id = accepted.json["id"]
    assert event_id.startswith("evt_")
    own_id = await http("POST", f"{url}/events", data=orjson.dumps({**event, "id": "evt_mine"}))
    assert (own_id.status, own_id.json) == (202, {"id": "evt_mine"})

    # 202 means acknowledged: both are in the topic now, and nothing else is.
    records = await read_to_end(settings.kafka.bootstrap_servers, settings.topics.portal_events)
    assert [record.key for record in records] == [b"org-events", b"org-events"]
    values = [orjson.loads(record.value) for record in records]
    assert values == [{**event, "id": event_id}, {**event, "id": "evt_mine"}]


@pytest.mark.parametrize("store", ["rocksdb", "memory"])
async def test_a_session_put_over_http_is_monitored_and_its_quota_shows_usage(
    make_config, topics_of, start_worker, http, store
):
    # Web requests read tables outside any stream event: both stores must find the key.
    config = api_config(make_config, store=store)
    settings = await topics_of(config)
    url = (await start_worker(config)).web_url
    key = "http-key-1"

    # 503 until the worker has its partitions (its /healthz answers before that); /readyz
    # says when that is.
    ready = await until(lambda: http("GET", f"{url}/readyz", auth=False), lambda a: a.status == 200)
    assert ready.json["ready"] is True
    assert ready.json["generation"] >= 1  # the consumer group generation it is ready in
    unknown = await until(lambda: http("GET", f"{url}/quota/{key}"), lambda a: a.status != 503)
    assert (unknown.status, unknown.json) == (404, {"error": "no session for key"})
    bad = await http("PUT", f"{url}/sessions/{key}", data=b'{"monitor": {"trigger_limits": [0]}}')
    assert bad.status == 400
    assert "trigger limit 0 is outside (0, 100]" in bad.json["error"]

    full_tyk_session = session_body(allowance=1000, rate=1000, meta_data={"x": "y"})
    put = await http("PUT", f"{url}/sessions/{key}", data=full_tyk_session)
    assert (put.status, put.json) == (202, {"key": key})
    records = await read_to_end(settings.kafka.bootstrap_servers, settings.topics.sessions)
    assert [(r.key, r.value) for r in records] == [(key.encode(), full_tyk_session)]

    fresh = await until(lambda: http("GET", f"{url}/quota/{key}"), lambda a: a.status == 200)
    assert fresh.json == {
        "key": key,
        "org_id": "org1",
        "period_start": None,
        "period_end": None,
        "usage": 0,
        "quota_max": 10,
        "usage_percentage": 0,
        "fired": [],
        "thresholds": ["50", "80"],
    }

    now = time.time()
    counts = [request_count(key, now + i) for i in range(3)] + [request_count(key, now + 3, 3)]
    await produce(settings.kafka.bootstrap_servers, settings.topics.requests, counts)
    used = await until(
        lambda: http("GET", f"{url}/quota/{key}"), lambda a: a.json.get("usage") == 6
    )
    assert used.json["fired"] == ["50"]
    assert used.json["usage_percentage"] == 60
    assert used.json["period_start"] == pytest.approx(now)
    assert used.json["period_end"] == pytest.approx(now + 3600)

    deleted = await http("DELETE", f"{url}/sessions/{key}")
    assert (deleted.status, deleted.json) == (202, {"key": key})
    gone = await until(lambda: http("GET", f"{url}/quota/{key}"), lambda a: a.status == 404)
    assert gone.json == {"error": "no session for key"}


async def test_an_org_put_over_http_and_its_quota(make_config, topics_of, start_worker, http):
    config = api_config(make_config)
    settings = await topics_of(config)
    url = (await start_worker(config)).web_url
    org = "http-org-1"

    bad = await http("PUT", f"{url}/orgs/{org}", data=b'{"quota_max": "100"}')
    assert bad.status == 400
    assert "quota_max" in bad.json["error"]
    body = {"quota_max": 4, "quota_renewal_rate": 0, "monitor": {"trigger_limits": [75]}}
    put = await http("PUT", f"{url}/orgs/{org}", data=orjson.dumps(body))
    assert (put.status, put.json) == (202, {"org": org})

    # A key without a session still counts towards its org.
    now = time.time()
    counts = [request_count("org-key", now + i, org=org) for i in range(3)]
    await produce(settings.kafka.bootstrap_servers, settings.topics.requests, counts)
    used = await until(
        lambda: http("GET", f"{url}/orgs/{org}/quota"),
        lambda a: a.status == 200 and a.json["usage"] == 3,
    )
    assert used.json == {
        "org": org,
        "period_start": pytest.approx(now),
        "period_end": None,  # never renews
        "usage": 3,
        "quota_max": 4,
        "usage_percentage": 75,
        "fired": ["75"],
        "thresholds": ["75"],
    }

    deleted = await http("DELETE", f"{url}/orgs/{org}")
    assert (deleted.status, deleted.json) == (202, {"org": org})
    gone = await until(lambda: http("GET", f"{url}/orgs/{org}/quota"), lambda a: a.status == 404)
    assert gone.json == {"error": "no org with that id"}


async def until_group_stable(bootstrap: str, group: str, members: int, timeout: float = 60) -> None:
    """Wait until the consumer group is Stable with ``members`` members."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    state: dict[str, Any] = {}
    try:
        async with asyncio.timeout(timeout):
            while True:
                try:
                    [response] = await admin.describe_consumer_groups([group])
                except KafkaError as exc:
                    if not exc.retriable:  # e.g. no coordinator yet while the group forms
                        raise
                else:
                    state = response.to_object()["groups"][0]
                    if state["state"] == "Stable" and len(state["members"]) == members:
                        return
                await asyncio.sleep(0.2)  # poll interval
    except TimeoutError:
        shown = (state.get("state"), len(state.get("members", [])))
        raise AssertionError(f"group {group} not stable with {members}: {shown}") from None
    finally:
        await admin.close()


def keys_one_per_partition(partitions: int) -> list[str]:
    """A key for each partition, as producers hash its bytes.

    With these keys, routing by faust's ``table_route`` (which hashes the key as the table's
    changelog serializes it, in JSON quotes) sends both to the wrong worker: this test fails.
    """
    everyone = list(range(partitions))
    found: dict[int, str] = {}
    for i in range(10_000):
        key = f"routed/key+{i}"  # Tyk's custom keys may hold any character
        found.setdefault(DefaultPartitioner()(key.encode(), everyone, everyone), key)
        if len(found) == partitions:
            return [found[p] for p in everyone]
    raise AssertionError("no key for some partition")


async def test_any_worker_answers_for_keys_held_by_another(
    make_config, topics_of, start_worker, http, tmp_path
):
    config = api_config(make_config)  # 2 partitions: with 2 workers, each holds one
    settings = await topics_of(config)
    first = await start_worker(config, name="first")
    # The same app (consumer group), with its own state folder and web port.
    other = {
        **config,
        "data_dir": str(tmp_path / "second-data"),
        "web": {"port": free_port(), "token": TOKEN},
    }
    second = await start_worker(other, name="second")
    # Once the group is stable with both, each worker holds one partition of every topic, so
    # each has one of the keys below and must fetch the other's answer from its peer.
    await until_group_stable(settings.kafka.bootstrap_servers, settings.app_id, members=2)
    keys = keys_one_per_partition(settings.kafka.partitions)
    for i, key in enumerate(keys):
        put = await http(
            "PUT", f"{second.web_url}/sessions/{quote(key, safe='')}", data=session_body(f"o{i}")
        )
        assert put.status == 202
    now = time.time()
    await produce(
        settings.kafka.bootstrap_servers,
        settings.topics.requests,
        [request_count(key, now, count=i + 1, org=f"o{i}") for i, key in enumerate(keys)],
    )

    # Both workers give the same answer for every key (after the owner's table recovery).
    for worker in (first, second):
        for i, key in enumerate(keys):
            answer = await until(
                lambda url=worker.web_url, key=key: http(
                    "GET", f"{url}/quota/{quote(key, safe='')}"
                ),
                lambda a, i=i: a.status == 200 and a.json["usage"] == i + 1,
            )
            assert (answer.json["key"], answer.json["org_id"]) == (key, f"o{i}")
            assert answer.headers["Content-Type"].startswith("application/json")
