"""`quota-pipeline bench` at a tiny size: it runs end to end and reports every figure.

Timing is never asserted; the real figures come from README's bench command.
"""

from __future__ import annotations

import asyncio
import os
import sys

import orjson
import pytest


@pytest.mark.timeout(300)
async def test_bench_runs_at_a_tiny_size_and_writes_its_json(kafka_bootstrap, tmp_path):
    out = tmp_path / "bench.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("QP_")}
    env["QP_KAFKA_BOOTSTRAP"] = kafka_bootstrap
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pipeline",
        "bench",
        "--records",
        "300",
        "--keys",
        "30",
        "--orgs",
        "3",
        "--partitions",
        "2",
        "--deliveries",
        "50",
        "--json",
        str(out),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
        cwd=tmp_path,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 240)
    assert process.returncode == 0, stderr.decode()[-2000:]
    assert "usage / ceiling" in stdout.decode()
    result = orjson.loads(out.read_bytes())
    assert (result["records"], result["keys"], result["orgs"], result["partitions"]) == (
        300,
        30,
        3,
        2,
    )
    for figure in ("produce_per_s", "ceiling_per_s", "usage_per_s", "ratio"):
        assert result[figure] > 0
    deliveries = result["deliveries"]
    assert (deliveries["deliveries"], deliveries["endpoints"]) == (50, 5)
    for figure in ("healthy_per_s", "beside_hanging_per_s", "kept"):
        assert deliveries[figure] > 0
