"""The `quota-pipeline` command line. Errors a person can cause end in one line and status 2."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence

from pipeline import __version__
from pipeline.config import Settings, load_settings
from pipeline.errors import BrokerUnavailable, ConfigError, UsageError

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
        "--loglevel", default="info", choices=["debug", "info", "warn", "error", "crit"]
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
    bench = commands.add_parser(
        "bench", help="measure the usage stage against the raw consume ceiling, in one run"
    )
    bench.add_argument("--records", type=int, default=200_000, help="request counts (200000)")
    bench.add_argument("--keys", type=int, default=10_000, help="distinct API keys (10000)")
    bench.add_argument("--orgs", type=int, default=100, help="distinct organisations (100)")
    bench.add_argument("--partitions", type=int, default=4, help="partitions per topic (4)")
    bench.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    return parser


def run(args: argparse.Namespace, settings: Settings) -> int:
    if args.command == "worker":
        from pipeline.worker import run_worker  # imports faust: only when needed

        run_worker(settings, loglevel=args.loglevel)
        return 0
    if args.command == "topics":
        return asyncio.run(create_topics_command(settings, args.partitions))
    if args.command in ("sessions", "orgs"):
        from pipeline.loader import put_file

        count = asyncio.run(put_file(settings, args.command, args.file))
        print(f"published {count} {args.command}")
        return 0
    if args.command == "demo":
        from pipeline.demo import run_demo

        return run_demo(duration=args.duration, rate=args.rate)
    if args.command == "bench":
        from pipeline.bench import bench

        if min(args.records, args.keys, args.orgs, args.partitions) < 1:
            raise UsageError("--records, --keys, --orgs and --partitions must be at least 1")
        return bench(args.records, args.keys, args.orgs, args.partitions, args.json)
    raise AssertionError(args.command)


async def create_topics_command(settings: Settings, partitions: int | None) -> int:
    from pipeline.kafka import contract_topics, create_topics

    if partitions is not None and partitions < 1:
        raise UsageError("--partitions must be at least 1")
    count = partitions or settings.kafka.partitions
    for name, created in await create_topics(settings, contract_topics(settings), count):
        print(f"{'created' if created else 'exists '} {name}")
    return 0


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # An unreachable broker is reported in one line of our own, not aiokafka's log lines.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    try:
        settings = load_settings(args.config)
        status = run(args, settings)
    except (ConfigError, UsageError, BrokerUnavailable) as exc:
        print(f"quota-pipeline: error: {exc}", file=sys.stderr)
        sys.exit(EXIT_USAGE)
    except KeyboardInterrupt:
        sys.exit(130)
    sys.exit(status)
