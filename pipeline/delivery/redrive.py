"""Re-delivery of dead letters and past events (pure): the jobs the worker would make again,
with the same webhook-id. ``quota-pipeline dlq redrive``, ``replay`` and the ops page's
redrive buttons all make them here, and write them to the first retry tier, where the running
workers deliver them as they deliver any retry."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, NamedTuple

from pipeline.config import Settings
from pipeline.delivery.jobs import DeliveryJob
from pipeline.delivery.planning import Notifier, rebuild


def jobs_for(
    settings: Settings, event: dict[str, Any], only_target: str | None
) -> list[DeliveryJob]:
    """The jobs the worker would make for ``event``: to ``only_target`` (a dead letter's), or to
    its webhooks."""
    notifier = Notifier.from_settings(settings)
    return [job for job in rebuild(notifier, event, only_target) if isinstance(job, DeliveryJob)]


class Redrive(NamedTuple):
    """The jobs that redrive some dead letters, and how many letters could not be."""

    jobs: list[DeliveryJob]
    #: Letters cut for size (``event_cut``): what is left names the event but cannot rebuild
    #: its delivery.
    cut: int


def redrive(settings: Settings, letters: Iterable[dict[str, Any]]) -> Redrive:
    jobs: list[DeliveryJob] = []
    cut = 0
    for letter in letters:
        if "event_cut" in letter:
            cut += 1
            continue
        jobs += jobs_for(settings, letter["event"], letter["target"])
    return Redrive(jobs, cut)
