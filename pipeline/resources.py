"""Where the shipped templates and schemas are: inside the package when it was installed from
a wheel (pyproject.toml ships the repository's templates/ and schemas/ there), at the top of
the repository in a checkout (and an editable install of it)."""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


def resource_dir(name: str) -> Path:
    """The folder ``name`` ("templates" or "schemas")."""
    for candidate in (PACKAGE_DIR / name, PACKAGE_DIR.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"the shipped {name} are missing: reinstall quota-pipeline")


def templates_dir() -> Path:
    return resource_dir("templates")


def schemas_dir() -> Path:
    return resource_dir("schemas")
