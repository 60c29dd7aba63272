"""The engine: a faust App behind a few small typed objects, for the stages to build on.

The stages (pipeline.usage, .delivery, .portal, .service) never see a faust object. They get
:class:`Topic` and :class:`Table` handles, :class:`pipeline.engine.feeds.BulkFeed` s of the
topics they read in bulk, and they register their agents, tasks and pages through
:class:`Engine`. What the engine does under that, it does with faust's public API where there
is one, and with the private names listed in docs/engine-internals.md where there is not.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping
from typing import Any, Protocol, cast

import faust
from faust.exceptions import DecodeError
from faust.types import TP, SchemaT, TableT
from faust.web.base import BlueprintManager

from pipeline.config import Settings
from pipeline.engine import tables as table_io
from pipeline.engine.acks import OrderedAcks
from pipeline.engine.activity import AgentActivity
from pipeline.engine.consumer import LosslessFetchConsumer
from pipeline.engine.feeds import Batch, BulkFeed, SourceEvent
from pipeline.engine.runs import Reject, handle_each, process_runs, run_bounded
from pipeline.engine.security import faust_credentials
from pipeline.engine.transactions import emit, emit_all
from pipeline.engine.transport import SCHEME, hooks_of

#: Record keys and values travel as bytes: we decode them ourselves so that a bad record becomes
#: a pipeline.rejected record with a reason instead of a faust decode error that skips it.
RAW: SchemaT[bytes, bytes] = faust.Schema(
    key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"
)
#: Our tables: str keys; values are plain JSON documents (faust's json codec, orjson underneath).
TABLE_SCHEMA: SchemaT[str, Any] = faust.Schema(
    key_type=str, key_serializer="raw", value_serializer="json"
)


class Topic:
    """A topic, as the stages see it: its name, and sending a record to it."""

    def __init__(self, engine: Engine, topic: faust.TopicT) -> None:
        self._engine = engine
        self.faust_topic = topic
        self.name: str = topic.get_topic_name()

    async def send(self, key: bytes | None, value: bytes | None) -> Awaitable[Any]:
        """Hand a record to the producer; returns the broker's acknowledgement to await.

        Straight to the producer: records are bytes already, and faust's Topic.send (a
        FutureMessage, its channel, serializers that do nothing) cost as much again."""
        producer = self._engine.app.producer
        sent: Awaitable[Any] = await producer.send(self.name, key, value, None, None, None)
        return sent


class Table:
    """A changelogged table, as the stages see it: JSON values by str key, read and written a
    batch at a time on behalf of a source record's partition (pipeline.engine.tables)."""

    def __init__(self, engine: Engine, table: TableT[str, Any]) -> None:
        self._engine = engine
        self.faust_table = table
        self.name: str = table.name

    def read(self, source: SourceEvent, keys: Iterable[str]) -> dict[str, Any]:
        return table_io.read_all(self.faust_table, source, keys)

    async def write(self, source: SourceEvent, items: Mapping[str, Any]) -> None:
        await table_io.write_all(self._engine.app, self.faust_table, source, items)

    def scan(self, source: SourceEvent) -> Iterator[tuple[str, Any]]:
        return table_io.scan_partition(self.faust_table, source)

    def scan_actives(self) -> Iterator[tuple[str, Any]]:
        """Outside a batch (a page): every value of the partitions this worker is active for."""
        return table_io.scan_actives(self.faust_table)

    def get(self, key: str, source: Any = None) -> Any:
        """One value outside a batch (a web request, a delivery): of ``source``'s partition,
        or found in whichever this worker holds. None for a value that does not decode."""
        try:
            if source is None:
                return self.faust_table.get(key)
            with table_io.acting_for(source):
                return self.faust_table.get(key)
        except (DecodeError, ValueError):
            return None


class EventStream(Protocol):
    """The events of a topic read through faust's streams, acknowledged by the agent."""

    def events(self) -> AsyncIterator[Any]: ...

    async def ack(self, event: Any) -> None: ...


def broker_urls(bootstrap_servers: str) -> list[str]:
    """One URL per bootstrap server, with the scheme that selects our transport."""
    return [
        f"{SCHEME}://{server.strip()}" for server in bootstrap_servers.split(",") if server.strip()
    ]


def faust_options(settings: Settings) -> dict[str, Any]:
    """The faust App's settings, from ours."""
    return {
        "broker": broker_urls(settings.kafka.bootstrap_servers),
        "broker_credentials": faust_credentials(settings.kafka),
        "store": "rocksdb://" if settings.store == "rocksdb" else "memory://",
        "datadir": str(settings.data_dir),
        "topic_partitions": settings.kafka.partitions,
        "topic_replication_factor": settings.kafka.replication_factor,
        "web_port": settings.web.port,
        "web_bind": settings.web.bind,
        "web_host": settings.web.bind,
        "autodiscover": False,
        "consumer_auto_offset_reset": "earliest",
        "producer_acks": -1,
        "processing_guarantee": settings.kafka.processing_guarantee,
        "broker_commit_interval": settings.kafka.commit_interval,
        # A worker that dies is noticed in 10 s (faust's default is 60 s): its partitions,
        # and the triggers waiting in them, move to the survivors that much sooner.
        "broker_session_timeout": 10.0,
        "broker_heartbeat_interval": 3.0,
        "table_standby_replicas": settings.kafka.standby_replicas,
        "consumer_max_fetch_size": settings.kafka.max_partition_fetch_bytes,
    }


class Engine:
    """One faust App, configured from the settings; topics, tables, feeds and agents are
    added before it starts."""

    def __init__(self, settings: Settings, **overrides: Any) -> None:
        """``overrides`` are faust settings, for tests."""
        self.settings = settings
        self.app = faust.App(settings.app_id, **{**faust_options(settings), **overrides})
        # Our own pages only: faust's (its tables, the router, statistics) would answer
        # without the token, and its table pages show sessions with developers' emails.
        self.app.web.blueprints = BlueprintManager()
        #: When each agent last finished a batch, and how long it took.
        self.activity = AgentActivity()

    # --- what the stages are built from ---------------------------------------------------

    def topic(self, name: str, *, internal: bool = False) -> Topic:
        """A topic of raw records; an internal one is made by the worker (the App's id in its
        name), with the configured partitions."""
        options: dict[str, Any] = {"schema": RAW}
        if internal:
            options |= {"internal": True, "partitions": self.settings.kafka.partitions}
        return Topic(self, self.app.topic(name, **options))

    def table(self, name: str) -> Table:
        return Table(
            self,
            self.app.Table(name, partitions=self.settings.kafka.partitions, schema=TABLE_SCHEMA),
        )

    def feed(self, topic: Topic, capacity: int, *, pauses_when_full: bool = False) -> BulkFeed:
        """The records of ``topic``, handed over a fetch at a time rather than through faust's
        streams (pipeline.engine.feeds)."""
        feed = BulkFeed(capacity, pauses_when_full=pauses_when_full)
        hooks_of(self.app).feeds[topic.name] = feed
        return feed

    # --- agents, tasks, pages -------------------------------------------------------------

    def bulk_agent(
        self,
        topic: Topic,
        feed: BulkFeed,
        handle: Callable[[dict[TP, list[Any]]], Awaitable[None]],
        *,
        name: str,
        max_records: int,
        within: float,
        ready: Callable[[Batch], Awaitable[bool]] | None = None,
    ) -> None:
        """Hand the records of ``feed`` to ``handle`` in batches, by partition, each under the
        commit gate (pipeline.engine.runs.process_runs)."""

        async def agent(stream: Any) -> None:
            # faust subscribes the agent to the topic (group membership, co-partitioned
            # tables); the records come through the feed, not through ``stream``.
            await process_runs(
                feed,
                hooks_of(self.app).gate,
                self.consumer,
                self.activity.timed(name, handle),
                max_records=max_records,
                within=within,
                ready=ready,
            )

        self.app.agent(topic.faust_topic, name=name)(agent)

    def each_agent(
        self,
        topic: Topic,
        feed: BulkFeed,
        handle: Callable[[Any], Awaitable[None]],
        *,
        name: str,
        limit: int,
        max_records: int,
        reject: Reject,
        due: Callable[[bytes | None], float] | None = None,
        before: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """Handle each record of ``feed`` on its own, ``limit`` at a time
        (pipeline.engine.runs.handle_each); ``before`` runs once first."""

        async def agent(stream: Any) -> None:
            if before is not None:
                await before()
            await handle_each(
                feed,
                self.consumer,
                self.activity.timed(name, handle),
                limit=limit,
                max_records=max_records,
                reject=reject,
                due=due,
            )

        self.app.agent(topic.faust_topic, name=name)(agent)

    def stream_agent(
        self, topic: Topic, body: Callable[[EventStream], Awaitable[None]], *, name: str
    ) -> None:
        """An agent over faust's stream of ``topic``, acknowledging events itself."""

        async def agent(stream: Any) -> None:
            manual = stream.noack()

            class Events:
                def events(self) -> AsyncIterator[Any]:
                    iterator: AsyncIterator[Any] = manual.events()
                    return iterator

                async def ack(self, event: Any) -> None:
                    await manual.ack(event)

            await body(Events())

        self.app.agent(topic.faust_topic, name=name)(agent)

    def concurrent_agent(
        self,
        topic: Topic,
        handle: Callable[[Any], Awaitable[None]],
        *,
        name: str,
        limit: int,
        reject: Reject,
        before: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """Handle each event of faust's stream of ``topic`` in a task of its own, ``limit``
        at a time (pipeline.engine.runs.run_bounded)."""

        async def body(stream: EventStream) -> None:
            if before is not None:
                await before()
            await run_bounded(
                stream.events(),
                limit,
                self.activity.timed(name, handle),
                OrderedAcks(stream.ack),
                reject=reject,
            )

        self.stream_agent(topic, body, name=name)

    def task(self, coroutine: Callable[[], Awaitable[None]]) -> None:
        """Run ``coroutine`` for as long as the worker runs."""
        self.app.task(coroutine)

    def on_stop(self, callback: Callable[[], Awaitable[None]]) -> None:
        """Call ``callback`` as the worker stops, after the agents."""

        async def stopping(app: Any, /, *args: Any, **kwargs: Any) -> None:
            await callback()

        self.app.on_before_shutdown.connect(stopping)

    # --- what the engine tells ------------------------------------------------------------

    @property
    def consumer(self) -> LosslessFetchConsumer:
        """The App's consumer: our transport's (pipeline.engine.transport)."""
        return cast(LosslessFetchConsumer, self.app.consumer)

    def assigned_once(self) -> bool:
        """Whether the worker has been through a rebalance (partitions and tables ready)."""
        return bool(self.app.rebalancing_count > 0)

    def rebalancing(self) -> bool:
        return bool(self.app.rebalancing)

    def own_url(self) -> str:
        """This worker's canonical URL, as the other workers reach its web port."""
        return str(self.app.conf.canonical_url).rstrip("/")

    def peers(self) -> list[str]:
        """The canonical URLs of every worker of the group with partitions assigned (this one
        included), as the last rebalance told them."""
        urls = {str(url).rstrip("/") for url in self.app.router.tables_metadata()}
        return sorted(urls | {self.own_url()})

    async def lags(self) -> dict[tuple[str, int], int]:
        """Per input partition this worker is assigned (not the changelogs): records not
        fetched yet; none before the worker's first assignment (no consumer runs yet)."""
        if not self.assigned_once():
            return {}
        return await self.consumer.lags()

    def generation(self) -> int:
        """The consumer group generation this worker last joined."""
        generation: int = self.app.consumer_generation_id
        return generation

    # --- sends in a batch's transaction ---------------------------------------------------

    async def emit(
        self, source: SourceEvent, topic: Topic, records: list[tuple[bytes, bytes]]
    ) -> None:
        """Send ``records`` (key, value) in ``source``'s transaction, as record batches; return
        once the broker has them all (pipeline.engine.transactions.emit_all)."""
        await emit_all(self.app, source, topic.faust_topic, records)

    async def emit_one(
        self, source: Any, topic: Topic, key: bytes | None, value: bytes
    ) -> Awaitable[Any]:
        """Send one record in ``source``'s transaction; returns the acknowledgement to await."""
        return await emit(self.app, source, topic.faust_topic, key, value)
