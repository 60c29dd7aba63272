"""Tables read and written in bulk: the same records and values as through faust's table API."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from pipeline.config import Settings
from pipeline.engine.tables import acting_for, changelog_records, read_all, scan_partition
from pipeline.wiring import build_pipeline


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("k-1", {"current": {"start": 1.5, "end": None, "usage": 7, "fired": [50]}}),
        ("ключ", {"é": "ü", "n": [1, 2.25, None, True]}),
        ("requests:3", 1_234_567),
    ],
)
async def test_a_changelog_record_is_what_faust_sends_for_the_same_write(
    key: str, value: Any
) -> None:
    # Async: faust builds its tables on the running loop (a loop of its own was left open).
    tables = build_pipeline(Settings()).tables
    for table in (tables.key_usage.faust_table, tables.applied.faust_table):
        # What faust's Table.on_key_set hands its producer buffer for table[key] = value.
        faust_message = table.changelog_topic.as_future_message(
            key=key,
            value=value,
            key_serializer=table.key_serializer,
            value_serializer=table.value_serializer,
        ).message

        assert changelog_records(table, {key: value}) == [(faust_message.key, faust_message.value)]


class SourceEvent:
    """A source event as far as tables look at it: the partition it came from."""

    def __init__(self, partition: int) -> None:
        self.message = SimpleNamespace(partition=partition, tp=None)


@pytest.mark.parametrize("store", ["rocksdb", "memory"])
async def test_read_all_finds_what_faust_stored_in_the_partition(store: str, tmp_path) -> None:
    table = build_pipeline(Settings(store=store, data_dir=tmp_path)).tables.key_usage.faust_table
    source, elsewhere = SourceEvent(1), SourceEvent(0)
    with acting_for(source):
        table.data["k-1"] = {"current": {"usage": 3}}
        table.data["ключ"] = [1, 2.5, None]
    with acting_for(elsewhere):
        table.data["k-0"] = {"current": {"usage": 9}}

    found = read_all(table, source, ["k-1", "ключ", "missing"])

    assert found == {"k-1": {"current": {"usage": 3}}, "ключ": [1, 2.5, None]}
    if store == "rocksdb":  # one database per partition; the memory store has one dict
        assert read_all(table, source, ["k-0"]) == {}


async def test_a_stored_value_that_does_not_decode_is_read_as_absent(tmp_path) -> None:
    table = build_pipeline(Settings(data_dir=tmp_path)).tables.held_requests.faust_table
    source = SourceEvent(2)
    with acting_for(source):
        table.data["fine"] = {"partition": 2, "n": 1}
    database = table.data._db_for_partition(2)
    database[b"broken"] = b"\xff not json"  # written into the changelog by something else

    assert read_all(table, source, ["fine", "broken"]) == {"fine": {"partition": 2, "n": 1}}
    assert dict(scan_partition(table, source)) == {"fine": {"partition": 2, "n": 1}}


@pytest.mark.parametrize("store", ["rocksdb", "memory"])
async def test_a_scan_finds_the_values_of_one_partition(store: str, tmp_path) -> None:
    table = build_pipeline(
        Settings(store=store, data_dir=tmp_path)
    ).tables.held_requests.faust_table
    source, elsewhere = SourceEvent(1), SourceEvent(0)
    with acting_for(source):
        table.data["a"] = {"partition": 1, "n": 1}
        table.data["b"] = {"partition": 1, "n": 2}
    with acting_for(elsewhere):
        table.data["c"] = {"partition": 0, "n": 3}

    assert dict(scan_partition(table, source)) == {
        "a": {"partition": 1, "n": 1},
        "b": {"partition": 1, "n": 2},
    }
