"""A generated mix of good and hostile records on every topic a worker reads, through a real
worker: every bad record is rejected with its coordinates, no good one is, and the good ones
are counted exactly."""

from __future__ import annotations

import base64
import random
import time
from collections import defaultdict
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from pipeline.usage.quota import UsageState
from tests.fuzz.inputs import SHAPES, dumps
from tests.integration.conftest import consume, wait_for_table

pytestmark = pytest.mark.fuzz

SEED = 20261203
KEYS = [f"mix-key-{i}" for i in range(8)]
ORG = "mix-org"


def bad_requests(rng: random.Random, now: float) -> list[tuple[bytes | None, bytes]]:
    """Records of gateway.requests that break the contract, one of each kind and more."""
    key = rng.choice(KEYS)
    good = {"ts": now, "org_id": ORG, "key": key, "count": 1}
    kinds = [
        (key.encode(), b"not json"),
        (key.encode(), SHAPES["deep field"]()),
        (key.encode(), SHAPES["deep object"]()),
        (key.encode(), SHAPES["huge key"]()),
        (key.encode(), b'{"ts": NaN, "org_id": "mix-org", "key": "' + key.encode() + b'"}'),
        (key.encode(), b'{"ts": 1e400, "org_id": "mix-org", "key": "' + key.encode() + b'"}'),
        (key.encode(), b'{"ts": 1, "org_id": "mix-org", "key": "k\xff\xfe"}'),
        (key.encode(), dumps({**good, "count": 0})),
        (key.encode(), dumps({**good, "count": 2**64})),
        (key.encode(), dumps({**good, "ts": "yesterday"})),
        (
            key.encode(),
            b'{"ts": 1, "org_id": "mix-org", "key": "%s", "count": 1, "count": "x"}' % key.encode(),
        ),
        (None, dumps(good)),  # no key
        (b"another-key", dumps(good)),  # keyed by another key
        (b"k" * 5000, dumps({**good, "key": "k" * 5000})),  # too long to be a key
        (key.encode(), b" " * 900_000),
    ]
    rng.shuffle(kinds)
    return kinds


def bad_states(rng: random.Random) -> dict[str, list[tuple[bytes | None, bytes]]]:
    session = {"org_id": ORG, "quota_max": 100, "quota_renewal_rate": 0}
    return {
        "sessions": [
            (rng.choice(KEYS).encode(), dumps({**session, "monitor": {"trigger_limits": [150]}})),
            (rng.choice(KEYS).encode(), dumps({**session, "quota_max": "lots"})),
            (rng.choice(KEYS).encode(), SHAPES["deep monitor"]()),
            (b"", dumps(session)),
            (b"\xff\xfe-key", dumps(session)),
            (rng.choice(KEYS).encode(), SHAPES["huge blank"]()),
        ],
        "orgs": [
            (ORG.encode(), dumps({"event_options": {"trigger_event": {"webhook": "ftp://x"}}})),
            (ORG.encode(), dumps({"event_options": {"key_event": {"email": "not-an-email"}}})),
            (ORG.encode(), SHAPES["deep object"]()),
            # (A compacted topic's broker refuses a record without a key.)
            (b"", dumps({"quota_max": 5})),
        ],
        "portal_events": [
            (ORG.encode(), SHAPES["huge event name"]()),
            (ORG.encode(), dumps({"event": "key_event.created", "org_id": ORG})),
            (ORG.encode(), SHAPES["huge data"]()),  # no org_id
            (ORG.encode(), SHAPES["deep array"]()),
        ],
    }


async def send_all(
    producer: AIOKafkaProducer, topic: str, records: list[tuple[bytes | None, bytes | None]]
) -> list[tuple[str, int, int]]:
    """Send in order; the (topic, partition, offset) of each."""
    sent = [await producer.send(topic, value, key=key) for key, value in records]
    return [(topic, (meta := await future).partition, meta.offset) for future in sent]


async def test_a_generated_mix_through_a_worker(make_config, topics_of, start_worker):
    rng = random.Random(SEED)
    config = make_config(monitor={"global_trigger_limits": [50]})
    settings = await topics_of(config)
    names = settings.topics
    now = time.time()
    sessions = {key: {"org_id": ORG, "quota_max": 1000, "quota_renewal_rate": 0} for key in KEYS}
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka.bootstrap_servers, max_request_size=1_048_000
    )
    await producer.start()
    bad: list[tuple[str, int, int]] = []
    expected: dict[str, int] = defaultdict(int)
    try:
        await send_all(producer, names.orgs, [(ORG.encode(), dumps({"quota_max": 10_000}))])
        await send_all(
            producer, names.sessions, [(k.encode(), dumps(s)) for k, s in sessions.items()]
        )
        states = bad_states(rng)
        for name in ("sessions", "orgs", "portal_events"):
            bad += await send_all(producer, getattr(names, name), states[name])
        # Good and bad requests interleaved, in several rounds.
        for round_ in range(5):
            good = []
            for _ in range(rng.randint(20, 60)):
                key, count = rng.choice(KEYS), rng.randint(1, 5)
                expected[key] += count
                record = {"ts": now + round_, "org_id": ORG, "key": key, "count": count}
                good.append((key.encode(), dumps(record)))
            mixed: list[tuple[bool, tuple[bytes | None, bytes]]] = [(True, r) for r in good]
            mixed += [(False, r) for r in bad_requests(rng, now)]
            rng.shuffle(mixed)
            coordinates = await send_all(producer, names.requests, [r for _, r in mixed])
            bad += [where for (ok, _), where in zip(mixed, coordinates, strict=True) if not ok]
        worker = await start_worker(config)
        await worker.wait_ready()  # the worker has made its internal topics
        # They take nothing but our own records either.
        for topic in (f"{settings.app_id}-org-partials", f"{settings.app_id}-retry-0"):
            bad += await send_all(producer, topic, [(b"x", b"garbage"), (b"x", b"{}")])
    finally:
        await producer.stop()

    total = sum(expected.values())
    await wait_for_table(
        settings,
        "key_usage",
        lambda state: {k: usage(state.get(k)) for k in KEYS} == {k: expected[k] for k in KEYS},
        timeout=120,
    )
    await wait_for_table(settings, "org_usage", lambda s: usage(s.get(ORG)) == total, timeout=60)
    rejected = await consume(
        settings.kafka.bootstrap_servers, names.rejected, until=lambda r: len(r) >= len(bad)
    )
    found = [orjson.loads(record.value) for record in rejected]
    assert sorted((r["topic"], r["partition"], r["offset"]) for r in found) == sorted(bad), (
        f"seed {SEED}"
    )
    for record in found:
        assert record["reason"]
        assert len(record["reason"]) <= 1000
        copied = base64.b64decode(record["value_b64"] or "")
        assert len(copied) == min(record["value_length"] or 0, 65536)


def usage(state: Any) -> int:
    period = UsageState.from_stored(state).current
    return period.usage if period is not None else 0
