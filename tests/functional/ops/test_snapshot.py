"""One worker's snapshot (pipeline.ops.snapshot) built from its own tables: a worker with the
memory store, its tables filled as the agents fill them, never started."""

from __future__ import annotations

from pathlib import Path

import orjson

from pipeline.config import Settings
from pipeline.ops.snapshot import WorkerSnapshots
from pipeline.service.worker import build_worker_pipeline
from pipeline.usage.quota import Period, UsageState
from tests.unit.samples import KEY, T0


def session(quota: int) -> dict[str, object]:
    return {
        "quota_max": quota,
        "quota_renewal_rate": 0,
        "trigger_limits": [],
        "org_id": "acme",
        "developer_email": None,
    }


async def test_a_value_that_does_not_read_leaves_its_key_out_not_the_panel(
    tmp_path: Path,
) -> None:
    settings = Settings.model_validate(
        {"store": "memory", "data_dir": str(tmp_path), "monitor": {"global_trigger_limits": [50]}}
    )
    pipeline = build_worker_pipeline(settings)
    sessions = pipeline.tables.sessions.faust_table.data
    usages = pipeline.tables.key_usage.faust_table.data
    for key, used in ((KEY, 90), ("other-key-0002", 30)):
        sessions[key] = session(100)
        usages[key] = UsageState(Period(T0, float("inf"), used)).to_json()
    sessions["broken-key-0003"] = session(100)
    usages["broken-key-0003"] = {"current": {"start": "not a period"}}

    snapshot = await WorkerSnapshots(pipeline, lambda now: {}, b"secret").get()

    assert [(row["key"], row["usage_percentage"]) for row in snapshot["keys"]] == [
        ("…4711", 90.0),
        ("…0002", 30.0),
    ]
    assert KEY.encode() not in orjson.dumps(snapshot)
    assert snapshot["lags"] == []  # before its first assignment, nothing is known of them
