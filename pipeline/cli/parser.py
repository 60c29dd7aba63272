"""The arguments of `quota-pipeline`: each command with a description, and the environment
variables it reads named in its --help."""

from __future__ import annotations

import argparse
from typing import Any

from pipeline import __version__
from pipeline.service import redaction

#: Read by every command that takes a config.
CONFIG_VARIABLES = (
    ("QP_CONFIG", "the config file, when --config is not given"),
    ("QP_<SECTION>__<FIELD>", "any setting, e.g. QP_MONITOR__GLOBAL_TRIGGER_LIMIT=80"),
)
KAFKA = ("QP_KAFKA_BOOTSTRAP", "Kafka bootstrap servers (default 127.0.0.1:9092)")
APP_ID = ("QP_APP_ID", "the app id: consumer group, prefix of internal topics")


def environment_epilog(*variables: tuple[str, str], config: bool = True) -> str:
    listed = [*variables, *(CONFIG_VARIABLES if config else ())]
    width = max(len(name) for name, _ in listed)
    lines = [f"  {name:<{width}}  {meaning}" for name, meaning in listed]
    return "environment variables:\n" + "\n".join(lines)


def config_parent() -> argparse.ArgumentParser:
    """--config, accepted after a command as well as before it. SUPPRESS: a command that is not
    given --config leaves the value the top-level parser read."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument(
        "--config",
        metavar="FILE",
        default=argparse.SUPPRESS,
        help="config file, JSON or TOML (default: $QP_CONFIG)",
    )
    return parent


def add_command(
    commands: Any,
    name: str,
    *,
    summary: str,
    description: str,
    variables: tuple[tuple[str, str], ...] = (),
    config: bool = True,
) -> argparse.ArgumentParser:
    return commands.add_parser(  # type: ignore[no-any-return]
        name,
        help=summary,
        description=description,
        epilog=environment_epilog(*variables, config=config) if variables or config else None,
        parents=[config_parent()] if config else [],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="quota-pipeline",
        description="Quota threshold alerts for API gateways, as a Kafka streaming pipeline.",
        epilog="Each command's --help describes it and names the environment variables it "
        "reads. Errors you can fix end in one line and exit status 2.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "--config", metavar="FILE", help="config file, JSON or TOML (default: $QP_CONFIG)"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_worker(commands)
    add_topics(commands)
    add_put(commands)
    add_demo(commands)
    add_dlq(commands)
    add_replay(commands)
    add_bench(commands)
    return parser


def add_worker(commands: Any) -> None:
    worker = add_command(
        commands,
        "worker",
        summary="run one worker of the pipeline",
        description="Run one worker of the consumer group: count usage, emit TriggerExceeded "
        "events, deliver webhooks and emails, serve /healthz, /readyz, /metrics and the HTTP "
        "API on its web port. Runs until SIGTERM or Ctrl-C.",
        variables=(
            KAFKA,
            APP_ID,
            ("QP_DATA_DIR", "where the worker keeps its RocksDB tables (default data)"),
            ("QP_STORE", "rocksdb (default), or memory for throwaway runs"),
            ("QP_WEB_PORT", "the web port (default 6066)"),
            ("QP_WEB_BIND", "the address it listens on (default 127.0.0.1)"),
            ("QP_WEB_TOKEN", "bearer token of the HTTP API (off without one)"),
            ("QP_TEMPLATES_DIR", "folder whose files replace the shipped templates by name"),
        ),
    )
    worker.add_argument(
        "--loglevel",
        default="info",
        choices=list(redaction.LEVELS),
        help="debug shows quota-pipeline's own debug lines; faust, mode and aiokafka stay at "
        "info, as their debug lines print whole records (default info)",
    )


def add_topics(commands: Any) -> None:
    topics = add_command(
        commands,
        "topics",
        summary="manage the contract's topics",
        description="Manage the topics of the contract.",
        config=False,
    )
    actions = topics.add_subparsers(dest="topics_command", required=True, metavar="ACTION")
    create = add_command(
        actions,
        "create",
        summary="create every contract topic with its cleanup policy (idempotent)",
        description="Create every topic of the contract that does not exist yet, each with its "
        "cleanup policy (compacted sessions and orgs, a 28-day dead-letter topic), and say "
        "which existed. The worker creates its internal topics itself.",
        variables=(KAFKA,),
    )
    create.add_argument(
        "--partitions",
        type=int,
        default=None,
        help="partitions per topic (default: kafka.partitions, 4)",
    )


def add_put(commands: Any) -> None:
    for kind, topic, key in (
        ("sessions", "quota.sessions", "API key"),
        ("orgs", "quota.orgs", "org id"),
    ):
        group = add_command(
            commands,
            kind,
            summary=f"publish {kind} to {topic}",
            description=f"Publish {kind} to {topic}.",
            config=False,
        )
        actions = group.add_subparsers(dest=f"{kind}_command", required=True, metavar="ACTION")
        put = add_command(
            actions,
            "put",
            summary=f"validate and publish {kind} from a file",
            description=f"Validate every entry of FILE, then publish them to {topic}, keyed by "
            f"{key}. FILE is a JSON object of {key} to object (null deletes: a tombstone), or "
            "JSON lines of such objects. Every bad entry is reported (the first 20) and then "
            "nothing is published.",
            variables=(KAFKA,),
        )
        put.add_argument("file", metavar="FILE", help="the file, or - for stdin")
        if kind == "sessions":
            add_sync(actions)


def add_sync(actions: Any) -> None:
    sync = add_command(
        actions,
        "sync",
        summary="publish the key sessions of a Tyk Gateway that changed since the last sync",
        description="Read every key session (and org session) through Tyk Gateway's REST API "
        "(config section tyk) and publish to quota.sessions those that changed since the last "
        "sync, keyed by the API key as Tyk lists it, and tombstones for keys a sync published "
        "that the gateway no longer has; orgs' quotas go to quota.orgs, keeping their "
        "event_options. Only the fields the pipeline reads are published (org_id, quota_max, "
        "quota_renewal_rate, monitor, meta_data). One summary line per pass.",
        variables=(
            KAFKA,
            ("QP_TYK__GATEWAY_URL", "the gateway's API, e.g. http://tyk-gateway:8080"),
            ("QP_TYK__GATEWAY_SECRET", "tyk.conf's secret (sent as x-tyk-authorization)"),
            ("QP_TYK__HASHED_KEYS", "true when the gateway hashes keys (hash_keys)"),
        ),
    )
    sync.add_argument(
        "--tyk-gateway", metavar="URL", help="the gateway's API (default: tyk.gateway_url)"
    )
    sync.add_argument(
        "--watch",
        metavar="SECONDS",
        type=float,
        default=None,
        help="sync again every SECONDS until Ctrl-C (default: one pass)",
    )


def add_demo(commands: Any) -> None:
    demo = add_command(
        commands,
        "demo",
        summary="run the whole pipeline on embedded defaults and show deliveries live",
        description="Run a worker on embedded defaults with sample sessions and orgs, simulate "
        "gateway traffic, and print each webhook and email as a local receiver and SMTP "
        "server get them, with each key's usage every 15 s. Starts deploy/kafka-local (from a "
        "checkout) when no broker answers. Leaves no topics and no files behind.",
        variables=(KAFKA,),
        config=False,
    )
    demo.add_argument(
        "--duration",
        type=float,
        default=None,
        help="stop after this many seconds (default: run until Ctrl-C)",
    )
    demo.add_argument(
        "--rate", type=float, default=200.0, help="simulated requests per second (default 200)"
    )


def add_window_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--since", metavar="T", help="from this time (unix seconds or ISO-8601)")
    parser.add_argument("--until", metavar="T", help="before this time")


def add_dlq(commands: Any) -> None:
    dlq = add_command(
        commands,
        "dlq",
        summary="inspect and redrive notifications.dlq",
        description="Inspect the dead-letter topic and redrive its letters.",
        config=False,
    )
    actions = dlq.add_subparsers(dest="dlq_command", required=True, metavar="ACTION")
    for action, summary, description in (
        (
            "list",
            "list dead letters",
            "List dead letters: a table in a terminal, tab-separated lines when piped "
            "(id, target, attempts, status, last attempt, last error), or JSON with --json.",
        ),
        ("show", "show the dead letters of one event id", "Print the dead letters of one id."),
        (
            "redrive",
            "re-deliver dead letters through the workers (same webhook-id)",
            "Queue the dead letters' deliveries on the first retry tier, where the running "
            "workers deliver them with the same webhook-id as before.",
        ),
    ):
        sub = add_command(
            actions, action, summary=summary, description=description, variables=(KAFKA, APP_ID)
        )
        if action == "show":
            sub.add_argument("event_id", metavar="ID", help="the event id (webhook-id)")
        if action == "list":
            sub.add_argument("--json", action="store_true", help="one JSON array of the letters")
        add_window_arguments(sub)
        sub.add_argument("--target", help="only dead letters for this target URL")
        if action == "redrive":
            sub.add_argument("--dry-run", action="store_true", help="say what would be sent")


def add_replay(commands: Any) -> None:
    replay = add_command(
        commands,
        "replay",
        summary="re-deliver trigger events of a time range (same webhook-id)",
        description="Queue the deliveries of past TriggerExceeded events (by record time) on "
        "the first retry tier, where the running workers deliver them with the same "
        "webhook-id. Replaying gateway.requests is refused: it would count usage twice.",
        variables=(KAFKA, APP_ID),
    )
    replay.add_argument("--topic", default=None, help="the topic to replay (quota.triggers)")
    add_window_arguments(replay)
    replay.add_argument("--key", help="only events of this API key")
    replay.add_argument("--org", help="only events of this org")
    replay.add_argument("--dry-run", action="store_true", help="say what would be sent")


def add_bench(commands: Any) -> None:
    bench = add_command(
        commands,
        "bench",
        summary="measure throughput, latency, memory and delivery rates in one run",
        description="Measure, on a broker of its own run's topics, the usage stage against a "
        "bare consumer, produce-to-webhook latency, peak memory and recovery of --active-keys "
        "keys, and the webhook and email rates; each figure is printed beside its target. "
        "Of the config, only the kafka section is used: where the broker is and how to connect "
        "to it (TLS, SASL).",
        variables=(KAFKA,),
    )
    bench.add_argument("--records", type=int, default=200_000, help="request counts (200000)")
    bench.add_argument("--keys", type=int, default=10_000, help="distinct API keys (10000)")
    bench.add_argument("--orgs", type=int, default=100, help="distinct organisations (100)")
    bench.add_argument("--partitions", type=int, default=4, help="partitions per topic (4)")
    bench.add_argument(
        "--deliveries", type=int, default=20_000, help="webhooks to deliver; 0 skips (20000)"
    )
    bench.add_argument("--emails", type=int, default=5_000, help="emails to send; 0 skips (5000)")
    bench.add_argument(
        "--workers", type=int, default=1, help="worker processes of the usage stage (1)"
    )
    bench.add_argument(
        "--skew", metavar="zipf:S", help="keys follow a zipf distribution of exponent S"
    )
    bench.add_argument(
        "--latency-seconds",
        type=float,
        default=20.0,
        help="seconds of steady load at half the usage rate for latency; 0 skips (20)",
    )
    bench.add_argument(
        "--crossing-every",
        type=int,
        default=None,
        metavar="N",
        help="one record in N of the latency run crosses a threshold (1000)",
    )
    bench.add_argument(
        "--active-keys",
        type=int,
        default=None,
        help="keys held by one worker for peak RSS and recovery; 0 skips (--keys)",
    )
    bench.add_argument(
        "--ingest-records",
        type=int,
        default=None,
        metavar="N",
        help="Tyk Pump records one worker ingests; 0 skips (--records)",
    )
    bench.add_argument(
        "--sessions",
        type=int,
        default=100_000,
        metavar="N",
        help="sessions synced from a stand-in Tyk Gateway and applied; 0 skips (100000)",
    )
    bench.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    bench.add_argument(
        "--plot", metavar="FILE.png", help="also draw throughput and latency (matplotlib)"
    )
