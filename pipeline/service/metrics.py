"""The worker's Prometheus metrics (served at /metrics on its web port).

One registry per process, not the global default: tests build many Apps in one interpreter,
and the default registry refuses a second metric of the same name.
"""

from __future__ import annotations

import functools

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

REGISTRY = CollectorRegistry(auto_describe=True)

DELIVERIES = Counter(
    "quota_pipeline_deliveries",
    "Delivery attempts' outcomes, by channel (webhook, email) and outcome",
    ["channel", "outcome"],
    registry=REGISTRY,
)


@functools.cache
def delivery_outcome(channel: str, outcome: str) -> Counter:
    """The counter of one (channel, outcome); ``labels`` takes a lock and checks its arguments
    on every call, which showed at thousands of deliveries per second."""
    return DELIVERIES.labels(channel=channel, outcome=outcome)


REJECTED = Counter(
    "quota_pipeline_rejected_records",
    "Records sent to pipeline.rejected, by source topic",
    ["topic"],
    registry=REGISTRY,
)
PORTAL_EVENTS = Counter(
    "quota_pipeline_portal_events",
    "Portal events consumed, by outcome (delivered, no_targets, rejected)",
    ["outcome"],
    registry=REGISTRY,
)
NO_RECIPIENT = Counter(
    "quota_pipeline_emails_without_recipient",
    "Emails not sent because their subject has no address, by template",
    ["template"],
    registry=REGISTRY,
)

HELD_SUBJECTS = Gauge(
    "quota_pipeline_held_subjects",
    "Keys (subject=key) or orgs (subject=org) whose requests wait for their session or org "
    "record, in this worker's partitions",
    ["subject"],
    registry=REGISTRY,
)
HELD_REQUESTS = Gauge(
    "quota_pipeline_held_requests",
    "Requests waiting for their key's session (subject=key) or their org's record (subject=org)",
    ["subject"],
    registry=REGISTRY,
)
HELD_RELEASED = Counter(
    "quota_pipeline_held_requests_released",
    "Held requests applied when their session or org record came",
    ["subject"],
    registry=REGISTRY,
)
HELD_DROPPED = Counter(
    "quota_pipeline_held_requests_dropped",
    "Held requests dropped past the hold's bounds, by reason (expired, full, deleted)",
    ["subject", "reason"],
    registry=REGISTRY,
)
UNREADABLE_VALUES = Counter(
    "quota_pipeline_unreadable_table_values",
    "Stored table values that did not decode and were taken as absent, by table",
    ["table"],
    registry=REGISTRY,
)

INGESTED = Counter(
    "quota_pipeline_ingested_records",
    "Records of the ingest sources consumed and committed, by source topic",
    ["topic"],
    registry=REGISTRY,
)
INGEST_PRODUCED = Counter(
    "quota_pipeline_ingest_produced_records",
    "Records the ingest stage produced (summed requests, org partials), by topic",
    ["topic"],
    registry=REGISTRY,
)


def exposition() -> bytes:
    """Every metric in the Prometheus text format."""
    return generate_latest(REGISTRY)
