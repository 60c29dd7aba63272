"""Building the settings tree from the config file and the environment, and saying in one
line which setting is wrong, where it came from, and why."""

from __future__ import annotations

import json
import os
import re
import tomllib
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from pydantic_settings import SettingsError

from pipeline.config.sections import SHORT_ENV_VARS, Settings
from pipeline.errors import ConfigError
from pipeline.records.checks import validation_message


def read_config_file(path: Path) -> dict[str, Any]:
    """Parse a JSON or TOML config file into a dict; any problem is one ConfigError line."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
    try:
        data: Any = tomllib.loads(raw.decode()) if path.suffix == ".toml" else json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        kind = "TOML" if path.suffix == ".toml" else "JSON"
        raise ConfigError(f"config file {path} is not valid {kind}: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold an object at the top level")
    return data


def load_settings(config_path: str | Path | None = None) -> Settings:
    """Build the settings tree from the config file (argument, else QP_CONFIG) and environment."""
    path = config_path or os.environ.get("QP_CONFIG") or None
    file_data = read_config_file(Path(path)) if path else {}
    try:
        return Settings(**file_data)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc, file=path)) from exc
    except SettingsError as exc:  # a QP_ variable whose value is not the JSON it must be
        raise ConfigError(describe_settings_error(exc)) from exc


def describe_settings_error(exc: SettingsError) -> str:
    """One line naming the QP_ variable pydantic-settings could not parse, and why."""
    match = re.search(r'field "(\w+)"', str(exc))
    section = match.group(1) if match else ""
    prefix = f"QP_{section.upper()}__"
    culprits = [
        name
        for name, value in sorted(os.environ.items())
        if name.upper().startswith(prefix) and not _is_json(value)
    ]
    where = ", ".join(culprits) or f"a QP_{section.upper()} variable"
    cause = exc.__cause__
    why = f": {cause}" if cause is not None else ""
    return f"bad setting in {where}: not valid JSON{why}"


def _is_json(value: str) -> bool:
    try:
        json.loads(value)
    except ValueError:
        return False
    return True


def environment_source(loc: tuple[str | int, ...]) -> str | None:
    """The QP_ variable that set the setting at ``loc``, if one did."""
    path = tuple(str(part) for part in loc)
    for length in range(len(path), 0, -1):
        prefix = path[:length]
        short = next((name for name, at in SHORT_ENV_VARS.items() if at == prefix), None)
        nested = "QP_" + "__".join(prefix).upper()
        for variable in (short, nested):
            if variable is not None and variable in os.environ:
                return variable
    return None


def describe_validation_error(exc: ValidationError, *, file: str | Path | None) -> str:
    """One line naming the first bad setting, where it came from, and why."""
    first = exc.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "(top level)"
    source = environment_source(first["loc"]) or (str(file) if file else "the defaults")
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"bad setting {where} in {source}: {validation_message(first['msg'])}{more}"
