"""Selection, job building and listing for `dlq` and `replay` (no broker needed)."""

from __future__ import annotations

import io
from collections import namedtuple

import orjson
import pytest
from rich.console import Console

from pipeline.cli.operators import (
    Window,
    parse_time,
    select_dead_letters,
    select_triggers,
    show_letters,
)
from pipeline.config import Settings
from pipeline.delivery.redrive import jobs_for, redrive
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


LETTER = {
    "id": "evt_1",
    "target": "https://hooks.example/x",
    "attempts": 8,
    "last_status": 503,
    "last_error": "HTTP 503:\tService\nUnavailable",
    "last_attempt_at": 1764331200.5,
    "event": EVENT,
}


def shown(letters: list[dict], *, terminal: bool, as_json: bool = False) -> str:
    out = io.StringIO()
    console = Console(file=out, force_terminal=terminal, width=200, highlight=False)
    show_letters(letters, console, as_json=as_json)
    return out.getvalue()


def test_piped_dead_letters_are_tab_separated_lines_one_per_letter():
    text = shown([LETTER, {**LETTER, "id": "evt_2"}], terminal=False)
    assert text.splitlines() == [
        "evt_1\thttps://hooks.example/x\t8\t503\t2025-11-28T12:00:00+00:00\tHTTP 503: Service "
        "Unavailable",
        "evt_2\thttps://hooks.example/x\t8\t503\t2025-11-28T12:00:00+00:00\tHTTP 503: Service "
        "Unavailable",
    ]


def test_dead_letters_as_json_are_the_letters_themselves():
    assert orjson.loads(shown([LETTER], terminal=True, as_json=True)) == [LETTER]
    assert orjson.loads(shown([], terminal=False, as_json=True)) == []


@pytest.mark.parametrize("terminal", [True, False])
def test_no_dead_letters_is_said_in_words(terminal: bool):
    assert shown([], terminal=terminal).strip() == "no dead letters"


def test_a_terminal_gets_a_table_with_whole_ids():
    text = shown([LETTER], terminal=True)
    assert "1 dead letters" in text
    assert "evt_1" in text
    assert "\t" not in text


def test_a_redrive_rebuilds_whole_letters_and_counts_the_cut_ones():
    settings = Settings(monitor={"configuration": {"target_path": "http://monitor/hook"}})
    whole = {"id": "e1", "target": "http://monitor/hook", "event": EVENT}
    cut = {**whole, "event": {"id": "e2"}, "event_cut": {"length": 1, "sha256": "x"}}
    jobs, cut_count = redrive(settings, [whole, cut])
    assert [(job.url, job.event_id) for job in jobs] == [("http://monitor/hook", EVENT["id"])]
    assert cut_count == 1
