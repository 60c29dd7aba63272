"""The ops page's routes, on every worker's web port.

    GET  /ops/login            the sign-in form (one field: token)
    POST /ops/login            sets the session cookie and goes to /ops
    POST /ops/logout           clears it
    GET  /ops                  the group at a glance: nearest quotas, latest triggers,
                               endpoints, lag and agents (refreshes itself every 15 s)
    GET  /ops/dlq              dead letters, with filters and redrive
    POST /ops/dlq/redrive      redrive the picked letters (as `quota-pipeline dlq redrive`)
    POST /ops/search           a key or org -> its own view
    GET  /ops/keys/{key}       one key: its quota, usage and chart (the one URL with a raw key)
    GET  /ops/orgs/{org}       one org, the same
    GET  /ops/worker.json      this worker's snapshot, for the other workers (bearer token)

Every page needs the session cookie that /ops/login sets for the HTTP API's token (web.token);
without a token configured every page answers 403. Forms that change something carry a CSRF
token bound to the session, and are refused from another origin. A key's view is answered by
the worker that holds the key (forwarded with the browser's cookie, checked there again), as
``GET /quota/{key}`` is.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs, quote, urlencode

import aiohttp
from pydantic import SecretStr

from pipeline.delivery.activity import merge_snapshots
from pipeline.delivery.redrive import redrive
from pipeline.engine import Table, clients
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
from pipeline.ops import auth
from pipeline.ops.chart import usage_chart
from pipeline.ops.group import SNAPSHOT_PATH, ask_group
from pipeline.ops.letters import SHOWN, LetterFilter, letter_rows, picked
from pipeline.ops.nearest import nearest
from pipeline.ops.render import render
from pipeline.ops.snapshot import DeliveriesView, WorkerSnapshots
from pipeline.ops.triggers import trigger_rows
from pipeline.service.api_rules import authorize, key_quota, org_quota
from pipeline.usage.quota import UsageState
from pipeline.wiring import Pipeline

log = logging.getLogger(__name__)

#: Form bodies are a token, a key, or a few hundred picked letters.
MAX_FORM_BYTES = 64 * 1024
#: Records of quota.triggers read per partition for the latest-triggers panel.
TRIGGERS_PER_PARTITION = 30
#: Seconds between the overview's refreshes (an HTML meta refresh: no script needed).
REFRESH_EVERY = 15


class OpsPages:
    """The pages of one worker."""

    def __init__(self, pipeline: Pipeline, deliveries: DeliveriesView) -> None:
        self._pipeline = pipeline
        self._token: SecretStr | None = pipeline.settings.web.token
        secret = self._token.get_secret_value().encode() if self._token else b""
        key_refs = hmac.new(secret, b"quota-pipeline ops key refs", hashlib.sha256).digest()
        self.snapshots = WorkerSnapshots(pipeline, deliveries, key_refs)
        self._client: aiohttp.ClientSession | None = None

    # --- sessions ---------------------------------------------------------------------------

    def _signed_in(self, request: WebRequest) -> str | None:
        """The request's session cookie when it is valid."""
        cookie = request.cookie(auth.COOKIE_NAME)
        return cookie if auth.session_valid(cookie, self._token, time.time()) else None

    def signed_in(self, page: Callable[[WebRequest, str], Awaitable[Reply | Forwarded]]) -> Handler:
        """``page`` for a signed-in browser; the sign-in form's address for any other."""

        async def checked(request: WebRequest) -> Reply | Forwarded:
            if not self._token or not self._token.get_secret_value():
                return disabled()
            cookie = self._signed_in(request)
            if cookie is None:
                return Reply.redirect("/ops/login")
            return await page(request, cookie)

        return checked

    def changing(
        self, page: Callable[[WebRequest, str, dict[str, list[str]]], Awaitable[Reply]]
    ) -> Handler:
        """``page`` for a form that changes something: signed in, same origin, and the CSRF
        token of this session; 403 otherwise."""

        async def checked(request: WebRequest, cookie: str) -> Reply:
            form = await read_form(request)
            if form is None:
                return Reply.html(
                    render("error.html", message="The form is too large."), status=413
                )
            origin_ok = auth.same_origin(
                request.headers.get("Origin"),
                request.headers.get("Referer"),
                request.headers.get("Host"),
            )
            presented = next(iter(form.get("csrf", [])), None)
            if not origin_ok or not auth.csrf_valid(cookie, self._token, presented):
                return Reply.html(
                    render(
                        "error.html",
                        message="This form is out of date or came from another site. "
                        "Go back, reload the page and try again.",
                    ),
                    status=403,
                )
            return await page(request, cookie, form)

        return self.signed_in(checked)

    def context(self, cookie: str, **values: Any) -> dict[str, Any]:
        assert self._token is not None
        return {"csrf": auth.csrf_token(cookie, self._token), **values}

    # --- sign in and out ----------------------------------------------------------------------

    async def login_form(self, request: WebRequest) -> Reply:
        if not self._token or not self._token.get_secret_value():
            return disabled()
        if self._signed_in(request) is not None:
            return Reply.redirect("/ops")
        return Reply.html(render("login.html", failed=False))

    async def login(self, request: WebRequest) -> Reply:
        if not self._token or not self._token.get_secret_value():
            return disabled()
        form = await read_form(request)
        presented = (form or {}).get("token", [None])[0]
        if not auth.login_allowed(presented, self._token):
            log.info("ops: a sign-in with a wrong token")
            return Reply.html(render("login.html", failed=True), status=401)
        cookie = auth.issue_session(self._token, time.time(), secrets.token_urlsafe(24))
        header = auth.cookie_header(cookie, secure=request.secure)
        return Reply.redirect("/ops", headers={"Set-Cookie": header})

    async def logout(self, request: WebRequest, cookie: str, form: dict[str, list[str]]) -> Reply:
        header = auth.cleared_cookie_header(request.secure)
        return Reply.redirect("/ops/login", headers={"Set-Cookie": header})

    # --- the group at a glance ------------------------------------------------------------------

    async def group(self) -> tuple[list[dict[str, Any]], list[tuple[str, str]]]:
        assert self._token is not None
        if self._client is None or self._client.closed:
            self._client = aiohttp.ClientSession()
        engine = self._pipeline.engine
        view = await ask_group(
            engine.peers(), engine.own_url(), self.snapshots.get, self._token, self._client
        )
        return view.snapshots, view.missing

    async def overview(self, request: WebRequest, cookie: str) -> Reply:
        snapshots, missing = await self.group()
        deliveries = merge_snapshots([snapshot["deliveries"] for snapshot in snapshots])
        outcomes = {event["id"]: event for event in deliveries["events"]}
        records = await clients.read_topic(
            self._pipeline.settings,
            self._pipeline.topics.triggers.name,
            last=TRIGGERS_PER_PARTITION,
        )
        page = render(
            "overview.html",
            **self.context(
                cookie,
                now=time.time(),
                refresh=REFRESH_EVERY,
                workers=snapshots,
                missing=missing,
                keys=nearest(row for snapshot in snapshots for row in snapshot["keys"]),
                orgs=nearest(row for snapshot in snapshots for row in snapshot["orgs"]),
                triggers=trigger_rows(records or [], outcomes),
                endpoints=deliveries["endpoints"],
            ),
        )
        return Reply.html(page)

    async def worker_json(self, request: WebRequest) -> Reply:
        refusal = authorize(request.headers.get("Authorization"), self._token)
        if refusal is not None:
            return Reply.json({"error": refusal.error}, status=refusal.status)
        return Reply.json(await self.snapshots.get())

    # --- dead letters -------------------------------------------------------------------------

    async def dead_letters(self, request: WebRequest, cookie: str) -> Reply:
        settings = self._pipeline.settings
        wanted = LetterFilter.from_query(request.query)
        records = await clients.read_topic(settings, settings.topics.dlq) or []
        rows = letter_rows(records)
        matching = [row for row in rows if wanted.admits(row)]
        page = render(
            "dlq.html",
            **self.context(
                cookie,
                now=time.time(),
                filters=wanted,
                rows=matching[:SHOWN],
                matching=len(matching),
                total=len(rows),
                events=sorted({row["event"] for row in rows if row["event"]}),
                redriven=request.query.get("redriven"),
                cut=request.query.get("cut"),
            ),
        )
        return Reply.html(page)

    async def redrive_letters(
        self, request: WebRequest, cookie: str, form: dict[str, list[str]]
    ) -> Reply:
        settings, topics = self._pipeline.settings, self._pipeline.topics
        # One entry's own button names it ("only"); the selection's button sends the ticks.
        refs = form.get("only") or form.get("ref") or []
        if not topics.retry_tiers:
            return Reply.html(
                render("error.html", message="Redrive needs delivery.retry_schedule."),
                status=409,
            )
        records = await clients.read_topic(settings, settings.topics.dlq) or []
        jobs, cut = redrive(settings, picked(records, refs))
        try:
            for job in jobs:
                await publish(topics.retry_tiers[0], job.event_id.encode(), job.to_bytes())
        except PublishFailed as exc:
            return Reply.html(render("error.html", message=exc.reason), status=exc.status)
        log.info("ops: %d deliveries queued from %d dead letters", len(jobs), len(refs))
        # Back to the same filters (rebuilt from their fields: nothing else reaches the header).
        kept = LetterFilter.from_query(
            {k: v[0] for k, v in parse_qs(form.get("back", [""])[0]).items()}
        )
        query = urlencode(
            {"redriven": len(jobs), "cut": cut, **{k: v for k, v in kept._asdict().items() if v}}
        )
        return Reply.redirect(f"/ops/dlq?{query}")

    # --- one subject --------------------------------------------------------------------------

    async def search(self, request: WebRequest, cookie: str, form: dict[str, list[str]]) -> Reply:
        kind = form.get("kind", ["key"])[0]
        subject = form.get("subject", [""])[0].strip()
        if not subject:
            return Reply.redirect("/ops")
        where = "orgs" if kind == "org" else "keys"
        return Reply.redirect(f"/ops/{where}/{quote(subject, safe='')}")

    def subject_page(self, kind: str) -> Callable[[WebRequest, str], Awaitable[Reply | Forwarded]]:
        pipeline = self._pipeline
        tables = pipeline.tables
        subjects, usages = (
            (tables.sessions, tables.key_usage)
            if kind == "key"
            else (tables.orgs, tables.org_usage)
        )

        async def page(request: WebRequest, cookie: str) -> Reply | Forwarded:
            subject = request.params[kind]
            forwarded = await owner(pipeline, subjects, subject, request)
            if forwarded is not None:
                return forwarded
            stored = subjects.get(subject)
            if not isinstance(stored, dict):
                message = f"No {'session for that key' if kind == 'key' else 'org with that id'}."
                return Reply.html(render("error.html", message=message), status=404)
            usage = usages.get(subject)
            now = time.time()
            monitor = pipeline.settings.monitor
            view = (
                key_quota(subject, stored, usage, monitor=monitor, now=now)
                if kind == "key"
                else org_quota(subject, stored, usage, monitor=monitor, now=now)
            )
            return Reply.html(
                render(
                    "subject.html",
                    **self.context(
                        cookie,
                        now=now,
                        kind=kind,
                        subject=subject,
                        view=view,
                        chart=chart_of(usage, view, now),
                    ),
                )
            )

        return page

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()


def chart_of(usage: dict[str, Any] | None, view: dict[str, Any], now: float) -> Any:
    """The usage chart of a subject's open period; None without one."""
    if view["period_start"] is None:
        return None
    state = UsageState.from_stored(usage)
    return usage_chart(
        points=list(state.series),
        period_start=view["period_start"],
        period_end=view["period_end"],
        quota_max=view["quota_max"],
        thresholds=[float(limit) for limit in view["thresholds"]],
        fired=[float(limit) for limit in view["fired"]],
        now=now,
    )


async def owner(
    pipeline: Pipeline, table: Table, subject: str, request: WebRequest
) -> Reply | Forwarded | None:
    try:
        return await route_to_owner(pipeline.engine, table, subject, request)
    except NotReady:
        return Reply.html(
            render("error.html", message="This worker has no partitions yet: reload shortly."),
            status=503,
        )


async def read_form(request: WebRequest) -> dict[str, list[str]] | None:
    """The urlencoded form of a POST; None when it is too large."""
    try:
        body = await request.body(MAX_FORM_BYTES)
    except BodyTooLarge:
        return None
    return parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)


def disabled() -> Reply:
    return Reply.html(
        render("error.html", message="The ops page is off: set web.token (QP_WEB_TOKEN)."),
        status=403,
    )


def attach_ops(pipeline: Pipeline, deliveries: DeliveriesView) -> OpsPages:
    """Register the ops pages (before the worker starts)."""
    engine = pipeline.engine
    pages = OpsPages(pipeline, deliveries)
    serve(engine, "/ops/login", {"GET": pages.login_form, "POST": pages.login}, name="ops-login")
    serve(engine, "/ops/logout", {"POST": pages.changing(pages.logout)}, name="ops-logout")
    serve(engine, "/ops", {"GET": pages.signed_in(pages.overview)}, name="ops")
    serve(engine, "/ops/dlq", {"GET": pages.signed_in(pages.dead_letters)}, name="ops-dlq")
    serve(
        engine,
        "/ops/dlq/redrive",
        {"POST": pages.changing(pages.redrive_letters)},
        name="ops-redrive",
    )
    serve(engine, "/ops/search", {"POST": pages.changing(pages.search)}, name="ops-search")
    serve(
        engine,
        "/ops/keys/{key}",
        {"GET": pages.signed_in(pages.subject_page("key"))},
        name="ops-key",
    )
    serve(
        engine,
        "/ops/orgs/{org}",
        {"GET": pages.signed_in(pages.subject_page("org"))},
        name="ops-org",
    )
    serve(engine, SNAPSHOT_PATH, {"GET": pages.worker_json}, name="ops-worker")
    engine.on_stop(pages.close)
    return pages
