"""`quota-pipeline demo` on the test broker: deliveries shown live, each threshold once per
period, org triggers shown as the org, and nothing left behind (topics, files)."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.config import Settings
from pipeline.engine.clients import admin_client

#: Long enough for bob's quota to fill (about 33 s at the default rate) and acme's to pass half.
DURATION = 42

pytestmark = pytest.mark.timeout(300)


async def topics(bootstrap: str) -> list[str]:
    settings = Settings.model_validate({"kafka": {"bootstrap_servers": bootstrap}})
    async with admin_client(settings) as admin:
        return list(await admin.list_topics())


def test_the_demo_shows_each_threshold_once_and_leaves_nothing_behind(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    temp = tmp_path / "temp"  # the demo's temporary folder: empty again once it ends
    temp.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("QP_")}
    env["TMPDIR"] = str(temp)
    work = tmp_path / "work"
    work.mkdir()
    result = subprocess.run(
        [sys.executable, "-m", "pipeline", "demo", "--duration", str(DURATION)],
        env={**env, "QP_KAFKA_BOOTSTRAP": kafka_bootstrap, "COLUMNS": "250"},
        cwd=work,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    out = result.stdout
    assert result.returncode == 0, out + result.stderr

    webhooks = [line for line in out.splitlines() if " webhook " in line]
    bob = [re.search(r"key bob \(acme\) (\d+)% reached", line) for line in webhooks]
    assert sorted(int(m.group(1)) for m in bob if m) == [50, 80, 100]  # once each
    assert any("org acme 50% reached" in line for line in webhooks), out
    assert not any("demo-key-" in line for line in out.splitlines())  # keys shown by name
    emails = [line for line in out.splitlines() if " email " in line]
    assert any("to=ops@acme.example" in line for line in emails)
    usage = [line for line in out.splitlines() if " usage " in line]
    assert any("bob 1" in line and "(fired 50, 80, 100)" in line for line in usage), usage
    assert re.search(r"done: \d+ requests simulated, \d+ webhooks, \d+ emails", out)

    [run_id] = re.findall(r"demo run (\d+)", out)
    assert [t for t in asyncio.run(topics(kafka_bootstrap)) if f"demo-{run_id}" in t] == []
    assert list(temp.iterdir()) == []
    assert list(work.iterdir()) == []
