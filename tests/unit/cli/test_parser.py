"""pipeline.cli.parser: every command describes itself and names what it reads from the
environment; --config goes before or after the command."""

from __future__ import annotations

import argparse
from collections.abc import Iterator

import pytest

from pipeline.cli.parser import build_parser


def leaf_commands(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """Every command that runs something, with its words (``("dlq", "list")``)."""
    groups = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not groups:
        yield path, parser
    for group in groups:
        for name, sub in group.choices.items():
            yield from leaf_commands(sub, (*path, name))


LEAVES = dict(leaf_commands(build_parser()))


def test_every_command_is_reached() -> None:
    assert set(LEAVES) == {
        ("worker",),
        ("topics", "create"),
        ("sessions", "put"),
        ("sessions", "sync"),
        ("orgs", "put"),
        ("demo",),
        ("dlq", "list"),
        ("dlq", "show"),
        ("dlq", "redrive"),
        ("replay",),
        ("bench",),
    }


@pytest.mark.parametrize("words", list(LEAVES), ids=" ".join)
def test_every_command_has_a_description_and_names_its_environment(words: tuple[str, ...]) -> None:
    parser = LEAVES[words]
    assert len(parser.description or "") > 20
    text = parser.format_help()
    assert "environment variables:" in text
    assert "QP_KAFKA_BOOTSTRAP" in text


@pytest.mark.parametrize(
    "words", [w for w, p in LEAVES.items() if "--config" in p.format_help()], ids=" ".join
)
def test_config_is_accepted_after_the_command(words: tuple[str, ...]) -> None:
    required = {("sessions", "put"): ["file.json"], ("orgs", "put"): ["file.json"]}
    required[("dlq", "show")] = ["evt_1"]
    args = build_parser().parse_args([*words, *required.get(words, []), "--config", "c.json"])
    assert args.config == "c.json"
    assert "QP_CONFIG" in LEAVES[words].format_help()


def test_config_before_the_command_is_kept_when_none_follows() -> None:
    args = build_parser().parse_args(["--config", "before.json", "topics", "create"])
    assert args.config == "before.json"
    args = build_parser().parse_args(["--config", "a.json", "worker", "--config", "b.json"])
    assert args.config == "b.json"
    assert build_parser().parse_args(["worker"]).config is None


def test_commands_that_take_a_config_are_the_ones_that_read_settings() -> None:
    takes_config = {w for w, p in LEAVES.items() if "--config" in p.format_help()}
    # The demo builds its own settings for its own topics; the bench reads the kafka section
    # (how to reach and connect to the broker) and builds the rest itself.
    assert takes_config == set(LEAVES) - {("demo",)}
