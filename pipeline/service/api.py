"""The HTTP API on the worker's web port, for dashboards that cannot produce to Kafka.

Every route needs ``Authorization: Bearer <web.token>``; without ``web.token`` they all answer
403, so a worker never exposes them by accident. /healthz, /readyz and /metrics stay open.

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

The decisions (who may call, what a body becomes, what usage looks like) are in
pipeline.service.api_rules.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from functools import partial
from typing import Any, NamedTuple

from pydantic import SecretStr

from pipeline.engine import Table, Topic
from pipeline.engine.web import (
    BodyTooLarge,
    Forwarded,
    Handler,
    NotReady,
    PublishFailed,
    Reply,
    WebRequest,
    publish,
    route_to_owner,
    serve,
)
from pipeline.errors import InvalidRecord
from pipeline.service.api_rules import (
    MAX_BODY_BYTES,
    Record,
    authorize,
    key_quota,
    org_quota,
    org_record,
    portal_record,
    session_record,
)
from pipeline.wiring import Pipeline

log = logging.getLogger(__name__)

#: Turns a request body into what the client is answered and the record to publish.
Decide = Callable[[bytes], tuple[dict[str, str], Record]]


def failed(status: int, reason: str) -> Reply:
    return Reply.json({"error": reason}, status=status)


def guarded(token: SecretStr | None, handler: Handler) -> Handler:
    """``handler`` behind the bearer token: 401 or 403 first, before any other work (a caller
    without the token costs nothing, and is never forwarded)."""

    async def checked(request: WebRequest) -> Reply | Forwarded:
        refusal = authorize(request.headers.get("Authorization"), token)
        if refusal is not None:
            return Reply.json(
                {"error": refusal.error}, status=refusal.status, headers=refusal.headers
            )
        return await handler(request)

    return checked


async def accept(request: WebRequest, topic: Topic, decide: Decide) -> Reply:
    """Validate the body into a record, publish it, and answer 202 once it is acknowledged."""
    try:
        answer, record = decide(await request.body(MAX_BODY_BYTES))
    except BodyTooLarge:
        return failed(413, f"the body is larger than {MAX_BODY_BYTES} bytes")
    except InvalidRecord as exc:
        return failed(400, exc.reason)
    return await published(topic, record, answer)


async def published(topic: Topic, record: Record, answer: dict[str, str]) -> Reply:
    """Send ``record`` and answer 202 with ``answer`` once the broker acknowledges it."""
    try:
        await publish(topic, record.key, record.value)
    except PublishFailed as exc:
        # Never the record's key in the log: it may be an API key.
        log.warning("api: publish failed topic=%s error=%s", topic.name, exc.__cause__)
        return failed(exc.status, exc.reason)
    return Reply.json(answer, status=202)


def attach_api(pipeline: Pipeline) -> None:
    """Register the API's pages (before the worker starts)."""
    engine, topics, tables = pipeline.engine, pipeline.topics, pipeline.tables
    monitor, token = pipeline.settings.monitor, pipeline.settings.web.token

    def decide_event(body: bytes) -> tuple[dict[str, str], Record]:
        event_id, record = portal_record(body, default_id="evt_" + uuid.uuid4().hex)
        return {"id": event_id}, record

    async def post_event(request: WebRequest) -> Reply:
        return await accept(request, topics.portal_events, decide_event)

    serve(engine, "/events", {"POST": guarded(token, post_event)}, name="events")
    for param, path, topic, validate in (
        ("key", "/sessions/{key}", topics.sessions, session_record),
        ("org", "/orgs/{org}", topics.orgs, org_record),
    ):
        serve(
            engine,
            path,
            {
                "PUT": guarded(token, partial(put_record, param, topic, validate)),
                "DELETE": guarded(token, partial(delete_record, param, topic, validate)),
            },
            name=f"{param}-records",
        )
    for route in (
        QuotaRoute(
            path="/quota/{key}",
            param="key",
            subjects=tables.sessions,
            usages=tables.key_usage,
            missing="no session for key",
            render=partial(key_quota, monitor=monitor),
        ),
        QuotaRoute(
            path="/orgs/{org}/quota",
            param="org",
            subjects=tables.orgs,
            usages=tables.org_usage,
            missing="no org with that id",
            render=partial(org_quota, monitor=monitor),
        ),
    ):
        handler = partial(get_quota, pipeline, route)
        serve(engine, route.path, {"GET": guarded(token, handler)}, name=f"{route.param}-quota")


async def put_record(
    param: str, topic: Topic, validate: Callable[[str, bytes | None], Record], request: WebRequest
) -> Reply:
    """PUT: the body, once valid, to ``topic`` keyed by the path parameter: 202 {param: it}."""
    subject = request.params[param]
    return await accept(request, topic, lambda body: ({param: subject}, validate(subject, body)))


async def delete_record(
    param: str, topic: Topic, validate: Callable[[str, bytes | None], Record], request: WebRequest
) -> Reply:
    """DELETE: a tombstone keyed by the path parameter: 202 {param: it}."""
    subject = request.params[param]
    return await published(topic, validate(subject, None), {param: subject})


class QuotaRoute(NamedTuple):
    """A GET route showing one kind of subject's quota and usage."""

    path: str
    #: The path parameter naming the subject.
    param: str
    #: Subject -> its stored (compact) record; routing follows this table's partitions.
    subjects: Table
    #: Subject -> its stored UsageState; co-partitioned with ``subjects``.
    usages: Table
    #: The 404 reason for a subject not in ``subjects``.
    missing: str
    #: (subject, stored record, stored usage, now=…) -> the JSON answer.
    render: Callable[..., dict[str, Any]]


async def get_quota(
    pipeline: Pipeline, route: QuotaRoute, request: WebRequest
) -> Reply | Forwarded:
    """GET ``route.path``, answered by the worker that holds the subject."""
    subject = request.params[route.param]
    try:
        forwarded = await route_to_owner(pipeline.engine, route.subjects, subject, request)
    except NotReady:
        return failed(503, "the worker has no partitions assigned yet; retry")
    if forwarded is not None:
        return forwarded
    # A request runs outside any batch: the store looks the key up in every partition it
    # holds; a key lives in one partition only, so it finds the one value.
    stored = route.subjects.get(subject)
    if stored is None:
        return failed(404, route.missing)
    usage = route.usages.get(subject)
    return Reply.json(route.render(subject, stored, usage, now=time.time()))
