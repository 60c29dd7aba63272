"""`quota-pipeline topics create`: the contract's topics, each with its cleanup policy."""

from __future__ import annotations

from pipeline.config import Settings
from pipeline.engine.clients import TopicSpec, create_topics
from pipeline.errors import UsageError

#: The dead-letter topic keeps four weeks (Kafka's default is a week) so operators have time
#: to redrive.
DLQ_RETENTION_MS = 28 * 24 * 3600 * 1000


def contract_topics(settings: Settings) -> list[TopicSpec]:
    """Every topic of the contract with its cleanup policy, and the ingest sources' topics
    (made here only when missing: a gateway usually owns them)."""
    names = settings.topics
    delete = {"cleanup.policy": "delete"}
    compact = {"cleanup.policy": "compact"}
    return [
        TopicSpec(names.requests, delete),
        TopicSpec(names.sessions, compact),
        TopicSpec(names.orgs, compact),
        TopicSpec(names.triggers, delete),
        TopicSpec(names.portal_events, delete),
        TopicSpec(names.dlq, {**delete, "retention.ms": str(DLQ_RETENTION_MS)}),
        TopicSpec(names.rejected, delete),
        *(TopicSpec(source.topic, delete) for source in settings.ingest.sources),
    ]


async def create_topics_command(settings: Settings, partitions: int | None) -> int:
    """Create every contract topic that does not exist yet, printing what it did."""
    if partitions is not None and partitions < 1:
        raise UsageError("--partitions must be at least 1")
    count = partitions or settings.kafka.partitions
    for name, created in await create_topics(settings, contract_topics(settings), count):
        print(f"{'created' if created else 'exists '} {name}")
    return 0
