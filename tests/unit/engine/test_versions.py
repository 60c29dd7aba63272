"""pipeline.engine.versions: a worker refuses libraries outside the tested ranges, which
pyproject.toml declares too."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from pipeline.engine.versions import SUPPORTED, check_versions, installed_versions, unsupported
from pipeline.errors import ConfigError

PYPROJECT = Path(__file__).parents[3] / "pyproject.toml"


def test_the_installed_libraries_are_supported() -> None:
    assert unsupported(installed_versions()) == []
    check_versions()


@pytest.mark.parametrize(
    ("name", "found", "said"),
    [
        ("faust-streaming", "0.13.2", "faust-streaming 0.13.2 is installed"),
        ("faust-streaming", "0.16.0", "tested with <0.16,>=0.15.3"),
        ("aiokafka", "0.15.0", "aiokafka 0.15.0 is installed"),
        ("mode-streaming", None, "mode-streaming is not installed"),
    ],
)
def test_a_library_outside_its_range_is_named(name: str, found: str | None, said: str) -> None:
    installed = {**installed_versions(), name: found}
    [wrong] = unsupported(installed)
    assert said in wrong


def test_the_ranges_are_the_ones_pyproject_declares() -> None:
    declared = {
        requirement.name: requirement.specifier
        for requirement in map(
            Requirement, tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]
        )
    }
    assert {name: declared[name] for name in SUPPORTED} == SUPPORTED


def test_check_versions_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        "pipeline.engine.versions.installed_versions",
        lambda: {"faust-streaming": "0.15.3", "mode-streaming": "0.7.1", "aiokafka": "0.1.0"},
    )
    with pytest.raises(ConfigError, match=r"^aiokafka 0\.1\.0 is installed; [^;]*$"):
        check_versions()
