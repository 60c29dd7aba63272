"""The worker's Prometheus metrics (served at /metrics on its web port).

One registry per process, not the global default: tests build many Apps in one interpreter,
and the default registry refuses a second metric of the same name.
"""

from __future__ import annotations

import functools

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

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

# --- what the ops page and dashboards watch -----------------------------------------------

CONSUMER_LAG = Gauge(
    "quota_pipeline_consumer_lag",
    "Records of an input partition not yet read by this worker (high watermark minus "
    "position), for the partitions it is assigned",
    ["topic", "partition"],
    registry=REGISTRY,
)
BATCH_SECONDS = Histogram(
    "quota_pipeline_batch_seconds",
    "Seconds an agent took over one batch, by agent",
    ["agent"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
    registry=REGISTRY,
)
LAST_BATCH = Gauge(
    "quota_pipeline_last_batch_timestamp_seconds",
    "Unix time at which an agent last finished a batch, by agent",
    ["agent"],
    registry=REGISTRY,
)
TRIGGER_TO_DELIVERY = Histogram(
    "quota_pipeline_trigger_to_delivery_seconds",
    "Seconds from a trigger's event time to its delivery, by channel (webhook, email)",
    ["channel"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0, 7200.0),
    registry=REGISTRY,
)
DELIVERIES_IN_FLIGHT = Gauge(
    "quota_pipeline_deliveries_in_flight",
    "Delivery attempts under way, by endpoint (a webhook's scheme://host:port, or email)",
    ["endpoint"],
    registry=REGISTRY,
)
ENDPOINT_OUTCOMES = Counter(
    "quota_pipeline_endpoint_deliveries",
    "Delivery outcomes by endpoint: delivered, retrying (sent to a retry tier) or dead_lettered",
    ["endpoint", "outcome"],
    registry=REGISTRY,
)
BREAKER_STATE = Gauge(
    "quota_pipeline_breaker_state",
    "An endpoint's circuit breaker in this worker: 0 closed, 1 half open, 2 open",
    ["endpoint"],
    registry=REGISTRY,
)
BREAKER_SINCE = Gauge(
    "quota_pipeline_breaker_state_since_timestamp_seconds",
    "Unix time at which an endpoint's circuit breaker entered its current state",
    ["endpoint"],
    registry=REGISTRY,
)


def exposition() -> bytes:
    """Every metric in the Prometheus text format."""
    return generate_latest(REGISTRY)
