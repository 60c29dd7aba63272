"""The HTTP API on the worker's web port, for dashboards that cannot produce to Kafka.

Every route needs ``Authorization: Bearer <web.token>``; without ``web.token`` they all answer
403, so a worker never exposes them by accident. /healthz and /metrics stay open.

    POST   /events             a portal event -> portal.events (key org_id)  202 {"id": …}
    PUT    /sessions/{key}     a Session -> quota.sessions                    202 {"key": …}
    DELETE /sessions/{key}     a tombstone: stop monitoring the key           202 {"key": …}
    PUT    /orgs/{org}         an Org -> quota.orgs                           202 {"org": …}
    DELETE /orgs/{org}         a tombstone                                    202 {"org": …}
    GET    /quota/{key}        the key's current period, usage, fired thresholds
    GET    /orgs/{org}/quota   the org's

Writes answer once the broker has acknowledged the record; the agents apply it from the topic
like any other producer's. Reads are answered by the worker that holds the subject's table
partition: any other worker forwards the request there (faust's router). Workers find each
other at faust's canonical URL, ``http://<web.bind>:<web.port>`` unless ``NODE_CANONICAL_URL``
says otherwise: with a bind of 0.0.0.0, set it to an address the other workers can reach.

The pure decisions (who may call, what a body becomes, what a stored usage looks like) come
first; the faust views after them.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
import uuid
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any, NamedTuple, cast

import faust
import orjson
from aiokafka.errors import KafkaError, MessageSizeTooLargeError
from faust.exceptions import FaustError, SameNode
from faust.web import Request, Response, View
from pydantic import SecretStr

from pipeline.config import MonitorConfig
from pipeline.engine.app import Pipeline
from pipeline.errors import InvalidRecord
from pipeline.portal.events import decode_portal_event
from pipeline.records.checks import decode_json_object
from pipeline.records.subjects import decode_org, decode_session
from pipeline.usage.quota import NEVER, Limits, UsageState
from pipeline.usage.triggers import format_limit, usage_percentage
from pipeline.usage.watching import org_limits, watched_key

log = logging.getLogger(__name__)

#: Larger request bodies are refused (413): a session or an event is a few KiB at most.
MAX_BODY_BYTES = 1 << 20
#: Seconds a request waits on the broker (an acknowledgement, metadata) before answering 503.
#: faust's producer would wait 20 minutes; a dashboard would rather retry.
BROKER_TIMEOUT = 30.0
API_DISABLED = "the HTTP API is disabled: set web.token (QP_WEB_TOKEN)"


# --- Pure decisions ------------------------------------------------------------------------


class Refusal(NamedTuple):
    """Why a request may not use the API, as the response that says so."""

    status: int
    error: str
    headers: Mapping[str, str]


def authorize(authorization: str | None, token: SecretStr | None) -> Refusal | None:
    """None when the ``Authorization`` header carries the configured bearer token."""
    expected = token.get_secret_value() if token is not None else ""
    if not expected:
        # An empty token would admit "Bearer " from anyone: treat it as no token at all.
        return Refusal(403, API_DISABLED, {})
    scheme, _, presented = (authorization or "").strip().partition(" ")
    if scheme.lower() != "bearer" or not presented.strip():
        return Refusal(401, "missing bearer token", {"WWW-Authenticate": "Bearer"})
    # Bytes, not str: compare_digest refuses non-ASCII str, and a client may send anything.
    if not hmac.compare_digest(presented.strip().encode(), expected.encode()):
        return Refusal(
            401, "invalid bearer token", {"WWW-Authenticate": 'Bearer error="invalid_token"'}
        )
    return None


class Record(NamedTuple):
    """One record to publish: key and value bytes; a None value is a tombstone."""

    key: bytes
    value: bytes | None


def portal_record(body: bytes, default_id: str) -> tuple[str, Record]:
    """A portal event's id and its record; InvalidRecord says what is wrong with the body.

    The value is the body with ``id`` set, so the webhook-id of its deliveries is the id we
    answered. A client that sets ``id`` itself can retry without the event going out twice.
    """
    event = decode_portal_event(body, default_id=default_id)
    value = {**decode_json_object(body), "id": event.id}
    return event.id, Record(event.org_id.encode(), orjson.dumps(value))


def session_record(key: str, body: bytes | None) -> Record:
    """A session record (None body: a tombstone), published as received once it validates."""
    decode_session(body)
    return Record(key.encode(), body)


def org_record(org: str, body: bytes | None) -> Record:
    """An org record (None body: a tombstone), published as received once it validates."""
    decode_org(body)
    return Record(org.encode(), body)


def _plain_number(value: float) -> float | int:
    return int(value) if value == int(value) else value


def usage_view(stored: dict[str, Any] | None, limits: Limits, now: float) -> dict[str, Any]:
    """What a dashboard sees of a subject's stored usage state at ``now``.

    A period that has ended by ``now`` is shown as none open: periods roll only on the next
    record, which will open a fresh one, so its usage no longer counts against the quota.
    """
    period = UsageState.from_stored(stored).current
    if period is not None and now >= period.end:
        period = None
    usage = period.usage if period is not None else 0
    unlimited = limits.quota_max <= 0
    return {
        "period_start": period.start if period is not None else None,
        "period_end": period.end if period is not None and period.end != NEVER else None,
        "usage": usage,
        "quota_max": _plain_number(limits.quota_max),
        "usage_percentage": None if unlimited else usage_percentage(usage, limits.quota_max),
        "fired": [format_limit(t) for t in sorted(period.fired)] if period is not None else [],
        "thresholds": [format_limit(t) for t in sorted(limits.thresholds)],
    }


def key_quota(
    key: str,
    session: dict[str, Any],
    usage: dict[str, Any] | None,
    *,
    monitor: MonitorConfig,
    now: float,
) -> dict[str, Any]:
    """GET /quota/{key}: the key's stored session (compact) and usage, as the API shows them."""
    watched = watched_key(session, monitor)
    return {"key": key, "org_id": watched.org_id, **usage_view(usage, watched.limits, now)}


def org_quota(
    org: str,
    stored_org: dict[str, Any],
    usage: dict[str, Any] | None,
    *,
    monitor: MonitorConfig,
    now: float,
) -> dict[str, Any]:
    """GET /orgs/{org}/quota: the org's stored quota and usage, as the API shows them."""
    return {"org": org, **usage_view(usage, org_limits(stored_org, monitor), now)}


def publish_failure(exc: BaseException) -> tuple[int, str]:
    """The status and reason for a record the broker did not take."""
    # faust wraps what aiokafka refuses before sending; the broker's own errors come bare.
    if isinstance(exc, MessageSizeTooLargeError) or isinstance(
        exc.__cause__, MessageSizeTooLargeError
    ):
        return 413, "the record is larger than the broker accepts"
    return 503, "the broker did not acknowledge the record; retry"


# --- faust views ---------------------------------------------------------------------------


class BodyTooLarge(Exception):
    """The request body is over MAX_BODY_BYTES."""


async def read_body(request: Any, limit: int = MAX_BODY_BYTES) -> bytes:
    """The request body, read no further than ``limit`` bytes (faust's reader has no bound)."""
    if request.content_length is not None and request.content_length > limit:
        raise BodyTooLarge
    body = bytearray()
    async for chunk in request.content.iter_any():
        body += chunk
        if len(body) > limit:
            raise BodyTooLarge
    return bytes(body)


async def router_ready(app: faust.App, table: Any) -> bool:
    """True once faust's router can find the worker that holds a key of ``table``.

    The router hashes a key to its partition with the producer's metadata, which aiokafka keeps
    only for the topics the producer has sent to once it has sent anything: a changelog this
    worker never wrote to is missing, and the router fails with a TypeError. aiokafka's
    ``partitions_for`` fetches a missing topic's metadata and tracks the topic from then on
    (at once when it is known). This is the one place that reaches under faust's Producer.
    """
    topic = table.changelog_topic.get_topic_name()
    distribution = app.router.table_metadata(table.name)
    if not any(partitions.get(topic) for partitions in distribution.values()):
        # No assignment yet. Asking for the topic's metadata now could even create it, before
        # faust does, with the broker's default partition count (auto.create.topics.enable).
        return False
    producer = cast(Any, app.producer)._ensure_producer()
    await producer.partitions_for(topic)
    return True


def read_table(table: Any, key: str) -> Any:
    """A table's value for ``key``, read from a web request rather than an agent.

    A request runs outside any stream event, so faust's RocksDB store looks the key up in every
    partition database it holds (bloom filters first) rather than in one event's partition; a
    key lives in one partition only, so both find the same value. The memory store keeps every
    partition in one dict.
    """
    return table.get(key)


#: Turns a request body into what the client is answered and the record to publish.
Decide = Callable[[bytes], tuple[dict[str, str], Record]]


class ApiView(View):
    """A page of the API: every method checks the bearer token first."""

    token: SecretStr | None = None

    def refused(self, request: Request) -> Response | None:
        """The 401/403 response for a request without the right token; None lets it in."""
        refusal = authorize(request.headers.get("Authorization"), self.token)
        if refusal is None:
            return None
        return self.json(
            {"error": refusal.error}, status=refusal.status, headers=dict(refusal.headers)
        )

    def failed(self, status: int, reason: str) -> Response:
        return self.json({"error": reason}, status=status)

    async def accept(self, request: Request, topic: faust.TopicT, decide: Decide) -> Any:
        """Validate the body into a record, publish it, and answer 202 once it is acknowledged."""
        if (refused := self.refused(request)) is not None:
            return refused
        try:
            answer, record = decide(await read_body(request))
        except BodyTooLarge:
            return self.failed(413, f"the body is larger than {MAX_BODY_BYTES} bytes")
        except InvalidRecord as exc:
            return self.failed(400, exc.reason)
        return await self.publish(topic, record, answer)

    async def remove(
        self, request: Request, topic: faust.TopicT, record: Record, answer: dict[str, str]
    ) -> Any:
        """Publish a tombstone and answer 202 once it is acknowledged."""
        if (refused := self.refused(request)) is not None:
            return refused
        return await self.publish(topic, record, answer)

    async def publish(self, topic: faust.TopicT, record: Record, answer: dict[str, str]) -> Any:
        """Send ``record`` and answer 202 with ``answer`` once the broker acknowledges it."""
        try:
            async with asyncio.timeout(BROKER_TIMEOUT):
                await (await topic.send(key=record.key, value=record.value))
        except (KafkaError, FaustError, TimeoutError) as exc:
            status, reason = publish_failure(exc)
            # Never the record's key in the log: it may be an API key.
            log.warning("api: publish failed topic=%s error=%r", topic.get_topic_name(), exc)
            return self.failed(status, reason)
        return self.json(answer, status=202)


def attach_api(pipeline: Pipeline) -> None:
    """Register the API's pages on the pipeline's App (before it starts)."""
    app, topics, tables = pipeline.app, pipeline.topics, pipeline.tables
    monitor, web_token = pipeline.settings.monitor, pipeline.settings.web.token
    _events_page(app, web_token, topics.portal_events)
    _record_page(
        app,
        web_token,
        path="/sessions/{key}",
        param="key",
        topic=topics.sessions,
        validate=session_record,
    )
    _record_page(
        app, web_token, path="/orgs/{org}", param="org", topic=topics.orgs, validate=org_record
    )
    key_route = QuotaRoute(
        path="/quota/{key}",
        param="key",
        subjects=tables.sessions,
        usages=tables.key_usage,
        missing="no session for key",
        render=partial(key_quota, monitor=monitor),
    )
    org_route = QuotaRoute(
        path="/orgs/{org}/quota",
        param="org",
        subjects=tables.orgs,
        usages=tables.org_usage,
        missing="no org with that id",
        render=partial(org_quota, monitor=monitor),
    )
    for route in (key_route, org_route):
        _quota_page(app, web_token, route)


def _events_page(app: faust.App, web_token: SecretStr | None, topic: faust.TopicT) -> None:
    """POST /events: a portal event, with a fresh id unless it brings its own."""

    def decide(body: bytes) -> tuple[dict[str, str], Record]:
        event_id, record = portal_record(body, default_id="evt_" + uuid.uuid4().hex)
        return {"id": event_id}, record

    class Events(ApiView):
        token = web_token

        async def post(self, request: Request) -> Any:
            return await self.accept(request, topic, decide)

    app.page("/events", name="events")(Events)


def _record_page(
    app: faust.App,
    web_token: SecretStr | None,
    *,
    path: str,
    param: str,
    topic: faust.TopicT,
    validate: Callable[[str, bytes | None], Record],
) -> None:
    """PUT ``path``: the body, once valid, to ``topic`` keyed by the path parameter; DELETE: a
    tombstone. Both answer 202 ``{param: value}``."""

    class Records(ApiView):
        token = web_token

        async def put(self, request: Request, **match: str) -> Any:
            subject = match[param]
            return await self.accept(
                request, topic, lambda body: ({param: subject}, validate(subject, body))
            )

        async def delete(self, request: Request, **match: str) -> Any:
            subject = match[param]
            return await self.remove(request, topic, validate(subject, None), {param: subject})

    app.page(path, name=f"{param}-records")(Records)


class QuotaRoute(NamedTuple):
    """A GET route showing one kind of subject's quota and usage."""

    path: str
    #: The path parameter naming the subject.
    param: str
    #: Subject -> its stored (compact) record; routing follows this table's partitions.
    subjects: Any
    #: Subject -> its stored UsageState; co-partitioned with ``subjects``.
    usages: Any
    #: The 404 reason for a subject not in ``subjects``.
    missing: str
    #: (subject, stored record, stored usage, now=…) -> the JSON answer.
    render: Callable[..., dict[str, Any]]


def _quota_page(app: faust.App, web_token: SecretStr | None, route: QuotaRoute) -> None:
    """GET ``route.path``, answered by the worker that holds the subject.

    faust's router forwards the request to the worker assigned the subject's partition of
    ``route.subjects`` (the forwarded request keeps its headers, so the owner checks the token
    again), or says SameNode when that is this worker.
    """

    def here(view: View, subject: str) -> Response:
        stored = read_table(route.subjects, subject)
        if stored is None:
            return view.json({"error": route.missing}, status=404)
        usage = read_table(route.usages, subject)
        return view.json(route.render(subject, stored, usage, now=time.time()))

    class Quota(ApiView):
        token = web_token

        async def get(self, request: Request, **match: str) -> Any:
            # Refused before forwarding, so a caller without the token costs the owner nothing.
            if (refused := self.refused(request)) is not None:
                return refused
            try:
                async with asyncio.timeout(BROKER_TIMEOUT):
                    ready = await router_ready(app, route.subjects)
            except (KafkaError, TimeoutError):
                ready = False
            if not ready:
                return self.failed(503, "the worker has no partitions assigned yet; retry")
            subject = match[route.param]
            try:
                # The key as bytes, not str: faust's table_route would hash the key as the
                # changelog serializes it (JSON, in quotes), while records sit in the partition
                # of their raw key bytes, which producers hash. faust sends bytes through as is.
                return await app.router.route_req(
                    route.subjects.name, subject.encode(), self.web, request
                )
            except SameNode:
                return here(self, subject)

    app.page(route.path, name=f"{route.param}-quota")(Quota)
