"""The versions of faust-streaming, mode-streaming and aiokafka the engine is tested with.

The engine reaches under these libraries (docs/engine-internals.md lists every private name), so a
version outside these ranges may break it quietly: a worker refuses to start with one. CI runs
the engine's and the exactly-once tests on the lowest and the highest of each range, and
pyproject.toml declares the same ranges (a unit test holds them equal).
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from packaging.specifiers import SpecifierSet
from packaging.version import Version

from pipeline.errors import ConfigError

#: Distribution -> the range tested.
SUPPORTED: dict[str, SpecifierSet] = {
    "faust-streaming": SpecifierSet(">=0.15.3,<0.16"),
    "mode-streaming": SpecifierSet(">=0.6.0,<0.8"),
    "aiokafka": SpecifierSet(">=0.13,<0.15"),
}


def unsupported(installed: dict[str, str | None]) -> list[str]:
    """What is wrong with the installed versions (distribution -> version, None when
    missing), as sentences (pure)."""
    wrong = []
    for name, supported in SUPPORTED.items():
        found = installed.get(name)
        if found is None:
            wrong.append(f"{name} is not installed (quota-pipeline needs {name}{supported})")
        elif Version(found) not in supported:
            wrong.append(f"{name} {found} is installed; quota-pipeline is tested with {supported}")
    return wrong


def installed_versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for name in SUPPORTED:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    return found


def check_versions() -> None:
    """Raise ConfigError (one line, exit status 2) unless every library is in its range."""
    wrong = unsupported(installed_versions())
    if wrong:
        raise ConfigError("; ".join(wrong))
