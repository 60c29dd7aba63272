"""Table writes in bulk encode each record exactly as faust's own table write does."""

from __future__ import annotations

from typing import Any

import pytest

from pipeline.app import build_pipeline
from pipeline.config import Settings
from pipeline.tables import changelog_record


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
    for table in (tables.key_usage, tables.applied):
        # What faust's Table.on_key_set hands its producer buffer for table[key] = value.
        faust_message = table.changelog_topic.as_future_message(
            key=key,
            value=value,
            key_serializer=table.key_serializer,
            value_serializer=table.value_serializer,
        ).message

        assert changelog_record(table, key, value) == (faust_message.key, faust_message.value)
