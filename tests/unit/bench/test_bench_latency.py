"""Pairing webhooks with the records that crossed (pipeline.bench.latency.pair)."""

from __future__ import annotations

import orjson

from pipeline.bench.latency import pair
from pipeline.devtools.receiver import ReceivedWebhook


def webhook(key: str, at: float) -> ReceivedWebhook:
    body = orjson.dumps({"event": "TriggerExceeded", "key": key, "trigger_limit": "100"})
    return ReceivedWebhook("POST", "/", {}, body, at)


def test_each_crossing_key_pairs_with_its_first_webhook_only():
    sent_at = {"a": 10.0, "b": 11.0, "c": 12.0}
    received = [webhook("b", 11.5), webhook("a", 10.25), webhook("b", 13.0), webhook("x", 1.0)]
    assert sorted(pair(sent_at, received)) == [0.25, 0.5]


def test_org_triggers_without_a_key_are_ignored():
    assert pair({"a": 1.0}, [webhook("", 2.0)]) == []
