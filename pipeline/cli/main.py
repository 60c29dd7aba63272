"""The `quota-pipeline` command line. Errors a person can cause end in one line and status 2."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any

from pipeline import __version__
from pipeline.config import Settings, load_settings
from pipeline.errors import BrokerUnavailable, ConfigError, UsageError
from pipeline.service import redaction

EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="quota-pipeline",
        description="Quota threshold alerts for API gateways, as a Kafka streaming pipeline.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "--config", metavar="FILE", help="config file, JSON or TOML (default: $QP_CONFIG)"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    worker = commands.add_parser("worker", help="run one worker of the pipeline")
    worker.add_argument(
        "--loglevel",
        default="info",
        choices=list(redaction.LEVELS),
        help="debug shows quota-pipeline's own debug lines; faust, mode and aiokafka stay at "
        "info, as their debug lines print whole records (default info)",
    )

    topics = commands.add_parser("topics", help="manage the contract's topics")
    topics_commands = topics.add_subparsers(dest="topics_command", required=True, metavar="ACTION")
    create = topics_commands.add_parser(
        "create", help="create every contract topic with its cleanup policy (idempotent)"
    )
    create.add_argument(
        "--partitions",
        type=int,
        default=None,
        help="partitions per topic (default: kafka.partitions, 4)",
    )

    for kind, topic in (("sessions", "quota.sessions"), ("orgs", "quota.orgs")):
        group = commands.add_parser(kind, help=f"publish {kind} to {topic}")
        actions = group.add_subparsers(dest=f"{kind}_command", required=True, metavar="ACTION")
        put = actions.add_parser(
            "put",
            help=f"validate and publish {kind}: a JSON object of id to object (null deletes), "
            "or JSON lines of such objects",
        )
        put.add_argument("file", metavar="FILE", help="the file, or - for stdin")

    demo = commands.add_parser(
        "demo", help="run the whole pipeline on embedded defaults and show deliveries live"
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
    dlq = commands.add_parser("dlq", help="inspect and redrive notifications.dlq")
    dlq_actions = dlq.add_subparsers(dest="dlq_command", required=True, metavar="ACTION")
    for action, text in (
        ("list", "list dead letters"),
        ("show", "show the dead letters of one event id"),
        ("redrive", "re-deliver dead letters through the worker (same webhook-id)"),
    ):
        sub = dlq_actions.add_parser(action, help=text)
        if action == "show":
            sub.add_argument("event_id", metavar="ID", help="the event id (webhook-id)")
        add_window_arguments(sub)
        sub.add_argument("--target", help="only dead letters for this target URL")
        if action == "redrive":
            sub.add_argument("--dry-run", action="store_true", help="say what would be sent")

    replay = commands.add_parser(
        "replay", help="re-deliver trigger events of a time range (same webhook-id)"
    )
    replay.add_argument("--topic", default=None, help="the topic to replay (quota.triggers)")
    add_window_arguments(replay)
    replay.add_argument("--key", help="only events of this API key")
    replay.add_argument("--org", help="only events of this org")
    replay.add_argument("--dry-run", action="store_true", help="say what would be sent")

    bench = commands.add_parser(
        "bench", help="measure the usage stage against the raw consume ceiling, in one run"
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
    bench.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    bench.add_argument(
        "--plot", metavar="FILE.png", help="also draw throughput and latency (matplotlib)"
    )
    return parser


def add_window_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--since", metavar="T", help="from this time (unix seconds or ISO-8601)")
    parser.add_argument("--until", metavar="T", help="before this time")


def window_of(args: argparse.Namespace) -> Any:
    from pipeline.cli.operators import Window, parse_time

    return Window(
        since=parse_time(args.since) if args.since else None,
        until=parse_time(args.until) if args.until else None,
    )


def run_worker_command(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.service.worker import run_worker  # imports faust: only when needed

    run_worker(settings, loglevel=args.loglevel)
    return 0


def run_put_command(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.cli.files import put_file

    count = asyncio.run(put_file(settings, args.command, args.file))
    print(f"published {count} {args.command}")
    return 0


def run_demo_command(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.devtools.demo import run_demo

    return run_demo(duration=args.duration, rate=args.rate)


def run_dlq_command(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.cli import operators

    return operators.run(
        lambda console: operators.dlq_command(
            settings,
            args.dlq_command,
            window=window_of(args),
            target=args.target,
            event_id=getattr(args, "event_id", None),
            dry_run=getattr(args, "dry_run", False),
            console=console,
        )
    )


def run_replay_command(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.cli import operators

    return operators.run(
        lambda console: operators.replay_command(
            settings,
            args.topic or settings.topics.triggers,
            window=window_of(args),
            key=args.key,
            org=args.org,
            dry_run=args.dry_run,
            console=console,
        )
    )


def run_bench_command(args: argparse.Namespace, settings: Settings) -> int:
    import importlib.util

    from pipeline.bench.plan import CROSSING_EVERY, parse_skew
    from pipeline.bench.results import BenchOptions
    from pipeline.bench.run import bench

    if min(args.records, args.keys, args.orgs, args.partitions, args.workers) < 1:
        raise UsageError("--records, --keys, --orgs, --partitions and --workers must be at least 1")
    if args.workers > args.partitions:
        raise UsageError("--workers must not exceed --partitions: a worker needs a partition")
    if args.latency_seconds < 0 or (args.active_keys or 0) < 0:
        raise UsageError("--latency-seconds and --active-keys must not be negative")
    if args.crossing_every is not None and args.crossing_every < 1:
        raise UsageError("--crossing-every must be at least 1")
    try:
        exponent = None if args.skew is None else parse_skew(args.skew)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if args.plot and importlib.util.find_spec("matplotlib") is None:
        raise UsageError("--plot needs matplotlib: pip install 'quota-pipeline[bench]'")
    options = BenchOptions(
        records=args.records,
        keys=args.keys,
        orgs=args.orgs,
        partitions=args.partitions,
        workers=args.workers,
        skew=args.skew,
        exponent=exponent,
        latency_seconds=args.latency_seconds,
        crossing_every=args.crossing_every or CROSSING_EVERY,
        active_keys=args.keys if args.active_keys is None else args.active_keys,
        deliveries=args.deliveries,
        emails=args.emails,
    )
    return bench(options, json_path=args.json, plot_path=args.plot)


def run_topics_command(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.cli.topics import create_topics_command

    return asyncio.run(create_topics_command(settings, args.partitions))


COMMANDS: dict[str, Callable[[argparse.Namespace, Settings], int]] = {
    "worker": run_worker_command,
    "topics": run_topics_command,
    "sessions": run_put_command,
    "orgs": run_put_command,
    "demo": run_demo_command,
    "dlq": run_dlq_command,
    "replay": run_replay_command,
    "bench": run_bench_command,
}


def run(args: argparse.Namespace, settings: Settings) -> int:
    return COMMANDS[args.command](args, settings)


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        settings = load_settings(args.config)
        loglevel = getattr(args, "loglevel", "warn")
        redaction.install(
            redaction.Redactor(redaction.secrets_of(settings)), redaction.LEVELS[loglevel]
        )
        # An unreachable broker is reported in one line of our own, not aiokafka's log lines.
        logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
        status = run(args, settings)
    except (ConfigError, UsageError, BrokerUnavailable) as exc:
        print(f"quota-pipeline: error: {exc}", file=sys.stderr)
        sys.exit(EXIT_USAGE)
    except KeyboardInterrupt:
        sys.exit(130)
    sys.exit(status)
