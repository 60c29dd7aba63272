"""Selection and job building for `dlq` and `replay` (no broker needed)."""

from __future__ import annotations

from collections import namedtuple

import orjson
import pytest

from pipeline.cli.operators import (
    Window,
    jobs_for,
    parse_time,
    select_dead_letters,
    select_triggers,
)
from pipeline.config import Settings
from pipeline.errors import UsageError

Record = namedtuple("Record", "value timestamp")

EVENT = {
    "event": "TriggerExceeded",
    "message": "Quota trigger reached",
    "org": "acme",
    "key": "k1",
    "trigger_limit": "80",
    "id": "evt_1",
    "usage_percentage": 80,
}


def letter(event_id: str, target: str, at: float) -> Record:
    value = {"id": event_id, "target": target, "event": EVENT, "last_attempt_at": at}
    return Record(orjson.dumps(value), int(at * 1000))


def test_parse_time_reads_unix_seconds_and_iso_8601():
    assert parse_time("1764331200") == 1764331200
    assert parse_time("2025-11-28T12:00:00Z") == 1764331200
    assert parse_time("2025-11-28T12:00:00") == 1764331200  # UTC when no zone is given
    with pytest.raises(UsageError, match="ISO-8601"):
        parse_time("yesterday")


def test_window_is_half_open():
    window = Window(since=10, until=20)
    assert [window.holds(t) for t in (9.9, 10, 19.9, 20)] == [False, True, True, False]
    assert Window().holds(0)


def test_dead_letters_filter_by_time_target_and_id():
    records = [
        letter("evt_1", "http://a/x", 100),
        letter("evt_2", "http://b/x", 150),
        letter("evt_3", "http://a/x", 300),
        Record(b"not json", 0),
    ]
    chosen = select_dead_letters(records, window=Window(since=100, until=200), target="http://a/x")
    assert [d["id"] for d in chosen] == ["evt_1"]
    chosen = select_dead_letters(records, window=Window(), target=None, event_id="evt_3")
    assert [d["id"] for d in chosen] == ["evt_3"]


def test_triggers_filter_by_record_time_key_and_org():
    records = [
        Record(orjson.dumps({**EVENT, "key": "k1"}), 100_000),
        Record(orjson.dumps({**EVENT, "key": "k2"}), 100_000),
        Record(orjson.dumps({**EVENT, "key": "k1", "org": "globex"}), 500_000),
    ]
    assert (
        len(select_triggers(records, window=Window(since=50, until=200), key="k1", org=None)) == 1
    )
    assert len(select_triggers(records, window=Window(), key=None, org="globex")) == 1


def test_jobs_keep_the_event_id_and_go_where_the_worker_sends():
    settings = Settings.model_validate(
        {"monitor": {"configuration": {"target_path": "http://monitor/hook"}}}
    )
    [monitor_job] = jobs_for(settings, EVENT, None)
    assert (monitor_job.event_id, monitor_job.url) == ("evt_1", "http://monitor/hook")
    assert orjson.loads(monitor_job.body)["trigger_limit"] == "80"
    [org_job] = jobs_for(settings, EVENT, "http://acme/hook")
    assert (org_job.event_id, org_job.url, org_job.method) == ("evt_1", "http://acme/hook", "POST")
    assert jobs_for(settings, EVENT, "http://monitor/hook")[0].url == "http://monitor/hook"
