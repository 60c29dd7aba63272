"""The `quota-pipeline` command line. Errors a person can cause end in one line and status 2."""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any

from pipeline.cli.parser import build_parser
from pipeline.config import Settings, load_settings
from pipeline.errors import BrokerUnavailable, ConfigError, GatewayUnavailable, UsageError
from pipeline.service import redaction

EXIT_USAGE = 2


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
    if getattr(args, "sessions_command", None) == "sync":
        return run_sync_command(args, settings)
    from pipeline.cli.files import put_file

    count = asyncio.run(put_file(settings, args.command, args.file))
    print(f"published {count} {args.command}")
    return 0


def run_sync_command(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.sync.run import gateway_settings, sync_sessions

    if args.watch is not None and not args.watch > 0:
        raise UsageError("--watch must be more than 0 seconds")
    tyk = gateway_settings(settings.tyk, args.tyk_gateway)
    try:
        asyncio.run(sync_sessions(settings.model_copy(update={"tyk": tyk}), watch=args.watch))
    except KeyboardInterrupt:
        if args.watch is None:
            raise
    return 0  # watch mode ends on Ctrl-C or SIGTERM, as asked


def require(module: str, extra: str) -> None:
    """A command's optional dependency, or one line saying how to install it."""
    if importlib.util.find_spec(module) is None:
        raise UsageError(f"this command needs {module}: pip install 'quota-pipeline[{extra}]'")


def run_demo_command(args: argparse.Namespace, settings: Settings) -> int:
    require("aiosmtpd", "demo")
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
            as_json=getattr(args, "json", False),
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
    require("aiosmtpd", "bench")
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
    if (args.ingest_records or 0) < 0 or args.sessions < 0:
        raise UsageError("--ingest-records and --sessions must not be negative")
    try:
        exponent = None if args.skew is None else parse_skew(args.skew)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if args.plot:
        require("matplotlib", "bench")
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
        ingest_records=args.ingest_records,
        sessions=args.sessions,
    )
    return bench(options, settings.kafka, json_path=args.json, plot_path=args.plot)


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
    except (ConfigError, UsageError, BrokerUnavailable, GatewayUnavailable) as exc:
        print(f"quota-pipeline: error: {exc}", file=sys.stderr)
        sys.exit(EXIT_USAGE)
    except KeyboardInterrupt:
        sys.exit(130)
    sys.exit(status)
