"""The README and docs/ stay true: the quick start's config and session load as the worker
reads them, every relative link leads to a file (and a heading) of the repository, and nothing
refers to files outside it."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from pipeline.config import Settings
from pipeline.records.subjects import decode_session

ROOT = Path(__file__).parents[2]
README = ROOT / "README.md"
DOCS = [README, ROOT / "CHANGELOG.md", ROOT / "deploy" / "README.md", *(ROOT / "docs").glob("*.md")]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def json_blocks(path: Path) -> list[object]:
    blocks = re.findall(r"```json\n(.*?)```", path.read_text(), flags=re.DOTALL)
    return [json.loads(block) for block in blocks]


def test_the_readme_stays_short() -> None:
    assert len(README.read_bytes()) < 12_000


def test_the_quick_start_config_and_session_are_what_a_worker_reads() -> None:
    config, sessions = json_blocks(README)
    assert isinstance(config, dict)
    assert isinstance(sessions, dict)
    settings = Settings.model_validate(config)
    assert settings.monitor.enable_trigger_monitors
    assert settings.monitor.configuration.target_path.startswith("https://")
    for session in sessions.values():
        decoded = decode_session(json.dumps(session).encode())
        assert decoded is not None
        assert decoded.quota_max == 10_000


def slug(heading: str) -> str:
    """A heading's anchor as GitHub makes it."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    return {
        slug(line.lstrip("#")) for line in path.read_text().splitlines() if line.startswith("#")
    }


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_leads_into_the_repository(doc: Path) -> None:
    for target in LINK.findall(doc.read_text()):
        if target.startswith(("http://", "https://", "mailto:")):
            continue
        file_part, _, anchor = target.partition("#")
        linked = (doc.parent / file_part).resolve() if file_part else doc
        assert linked.is_relative_to(ROOT), f"{doc.name}: {target} leaves the repository"
        assert linked.exists(), f"{doc.name}: {target} does not exist"
        if anchor:
            assert anchor in anchors(linked), f"{doc.name}: no heading for #{anchor}"


def test_nothing_refers_to_files_outside_the_repository() -> None:
    tracked = [
        path
        for folder in ("pipeline", "tests", "docs", "deploy", "schemas", "templates")
        for path in (ROOT / folder).rglob("*")
        if path.is_file() and path.suffix in {".py", ".md", ".json", ".yaml", ".toml", ".txt"}
    ]
    outside = re.compile(r"\.\./shared|DESIGN\.md|STYLE\.md")
    for path in [*tracked, README, ROOT / "CHANGELOG.md", ROOT / "pyproject.toml", ROOT / "run"]:
        if path == Path(__file__):
            continue
        assert not outside.search(path.read_text(errors="replace")), path
