"""The lowest end of each supported range: the engine's unit tests and the exactly-once tests
in a second virtualenv (.venv-lowest) built with tests/versions/lowest.txt as constraints. The
suite itself runs on the highest end, in .venv."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

from pipeline.devtools.local import free_port
from pipeline.engine.versions import SUPPORTED

ROOT = Path(__file__).parents[2]
CONSTRAINTS = ROOT / "tests" / "versions" / "lowest.txt"
VENV = ROOT / ".venv-lowest"
#: The engine's unit tests, the SIGKILL exactly-once test and the stable offset reads (protocol
#: structs of our own on aiokafka's types). The two-worker exactly-once test (a partition handed
#: over) runs on the highest versions only: here it added 20 s to CI.
TESTS = [
    "tests/unit/engine",
    "tests/integration/test_stable_offsets.py",
    "tests/integration/test_exactly_once.py::test_worker_killed_mid_stream_loses_and_repeats_nothing",
]


def pinned() -> dict[str, Version]:
    pins = {}
    for line in CONSTRAINTS.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            requirement = Requirement(line)
            [spec] = requirement.specifier
            pins[requirement.name] = Version(spec.version)
    return pins


def test_the_constraints_pin_the_lowest_version_of_each_supported_range() -> None:
    pins = pinned()
    assert pins.keys() == SUPPORTED.keys()
    for name, supported in SUPPORTED.items():
        [lower] = [spec for spec in supported if spec.operator == ">="]
        assert pins[name] == Version(lower.version), name


def lowest_venv() -> Path:
    """.venv-lowest, (re)built when the constraints or pyproject.toml changed since."""
    python = VENV / "bin" / "python"
    stamp = VENV / ".installed"
    newest_input = max(CONSTRAINTS.stat().st_mtime, (ROOT / "pyproject.toml").stat().st_mtime)
    if stamp.exists() and stamp.stat().st_mtime >= newest_input:
        return python
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    subprocess.run(
        [
            *(str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"),
            *("--constraint", str(CONSTRAINTS), "--editable", f"{ROOT}[test]"),
        ],
        check=True,
        cwd=ROOT,
    )
    stamp.touch()
    return python


@pytest.mark.timeout(1200)
def test_engine_and_exactly_once_tests_pass_on_the_lowest_supported_versions() -> None:
    python = lowest_venv()
    installed = subprocess.run(
        [
            str(python),
            "-c",
            "import pipeline.engine.versions as v, json; print(json.dumps(v.installed_versions()))",
        ],
        check=True,
        capture_output=True,
        text=True,
        cwd=ROOT,
    ).stdout
    assert {name: Version(found) for name, found in json.loads(installed).items()} == pinned()

    env = {k: v for k, v in os.environ.items() if not k.startswith(("QP_", "PYTEST_"))}
    env["QP_TEST_KAFKA_PORT"] = str(free_port())  # its own broker, beside this suite's
    run = subprocess.run(
        [str(python), "-m", "pytest", "-p", "no:cacheprovider", "-q", *TESTS],
        check=False,
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
