"""Checks an installed quota-pipeline (a wheel in a fresh virtualenv) from the inside.

Run by tests/integration/test_wheel.py as ``<venv>/bin/python <this file>``, from a folder
outside the checkout with PYTHONPATH unset, so that ``import pipeline`` finds the installed
package. Checks that:

- pipeline is imported from the virtualenv's site-packages, not from the checkout;
- the templates and schemas it finds (pipeline.resources) are the ones shipped inside it;
- every email template shipped renders, through the code that renders them in the worker
  (Notifier and EmailComposer of pipeline.delivery.planning), into a complete email;
- every schema shipped validates a payload that the package's own code builds or accepts.

Prints one line per check, and exits non-zero (an AssertionError) at the first that fails.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jinja2
import orjson
from jinja2 import meta
from jsonschema import Draft202012Validator

import pipeline
from pipeline.config import WebhookConfig
from pipeline.delivery.jobs import DeliveryJob, dead_letter
from pipeline.delivery.planning import EmailComposer, Notifier, Planned
from pipeline.email.message import EmailRequest, build_message
from pipeline.email.templates import SUFFIXES, TEMPLATE_NAMES, EmailTemplates, RenderedEmail
from pipeline.errors import InvalidRecord, PermanentDeliveryError
from pipeline.portal.events import EVENT_NAMES, decode_portal_event
from pipeline.records.rejections import rejection
from pipeline.records.requests import decode_request
from pipeline.records.subjects import decode_org, decode_session
from pipeline.resources import schemas_dir, templates_dir
from pipeline.usage.quota import NEVER, Crossing
from pipeline.usage.triggers import trigger_event

CHECKOUT = Path(__file__).resolve().parents[2]
PACKAGE = Path(pipeline.__file__).resolve().parent

NOW = 1764333000.0
ORG_ID = "acme"
KEY = "b5f9a7c2e1d84f3a9c6e0b7d2a4f8e1c"
DEVELOPER = "dev@example.com"
ORG_DESK = "alerts@acme.example"

#: What a portal sends about a developer and their key request: every field a template uses.
PORTAL_DATA = {
    "id": "kr-77",
    "by_user": "dev-42",
    "email": DEVELOPER,
    "portal_developer": {"email": DEVELOPER},
    "catalogue_entry": {"name": "Pets API"},
    "for_plan": "plan-1",
    "name": "Pets API",
    "api_id": "api-9",
}


def report(line: str) -> None:
    print(line, flush=True)


# --- where the package is ----------------------------------------------------------------------


def check_installed() -> None:
    """The package, and the resources it finds, come from the virtualenv, not the checkout."""
    prefix = Path(sys.prefix).resolve()
    assert sys.prefix != sys.base_prefix, f"{sys.executable} is not a virtualenv's python"
    assert PACKAGE.is_relative_to(prefix), f"pipeline imported from {PACKAGE}, not {prefix}"
    assert not PACKAGE.is_relative_to(CHECKOUT), f"pipeline imported from the checkout {PACKAGE}"
    for name, found in (("templates", templates_dir()), ("schemas", schemas_dir())):
        assert found.resolve() == PACKAGE / name, f"{name} found at {found}, not in {PACKAGE}"
    report(f"installed: {PACKAGE}")


# --- email templates ---------------------------------------------------------------------------


class RecordingTemplates(EmailTemplates):
    """The package's templates, noting each name rendered and what it made."""

    def __init__(self, pairs: Mapping[str, tuple[jinja2.Template, jinja2.Template]]) -> None:
        super().__init__(pairs)
        self.rendered: dict[str, list[RenderedEmail]] = {}

    def render(self, name: str, context: Mapping[str, Any]) -> RenderedEmail:
        email = super().render(name, context)
        self.rendered.setdefault(name, []).append(email)
        return email


def sent(planned: list[Planned], expected: int, what: str) -> list[DeliveryJob]:
    """The email jobs of ``planned``: every one built (none Unsendable), each a whole email."""
    jobs = [job for job in planned if isinstance(job, DeliveryJob) and job.channel == "email"]
    failed = [job for job in planned if not isinstance(job, DeliveryJob)]
    assert not failed, f"{what}: not rendered: {failed}"
    assert len(jobs) == expected, f"{what}: {len(jobs)} emails, expected {expected}: {planned}"
    for job in jobs:
        request = EmailRequest.from_json(job.body)
        for part in ("subject", "text", "html"):
            assert getattr(request, part).strip(), f"{what}: empty {part} in {request}"
        build_message(request, now=NOW)  # the MIME message the SMTP backend sends
    return jobs


def template_files() -> tuple[set[str], set[str]]:
    """The shipped email templates: the names with both parts, and the partials (``_*``)."""
    folder = templates_dir() / "email"
    files = sorted(path.name for path in folder.iterdir() if path.is_file())
    assert files, f"no email templates in {folder}"
    strays = [name for name in files if not name.endswith(SUFFIXES)]
    assert not strays, f"{folder} holds files that are not templates: {strays}"
    partials = {name for name in files if name.startswith("_")}
    names = {name.rsplit(".", 1)[0] for name in files if name not in partials}
    missing = sorted(
        f"{name}{suffix}"
        for name in set(TEMPLATE_NAMES) | names
        for suffix in SUFFIXES
        if f"{name}{suffix}" not in files
    )
    assert not missing, f"missing from {folder}: {missing}"
    unknown = sorted(names - set(TEMPLATE_NAMES))
    assert not unknown, f"{folder} ships templates the code never renders: {unknown}"
    environment = jinja2.Environment(loader=jinja2.FileSystemLoader(folder), autoescape=True)
    referenced: set[str] = set()
    for name in files:
        source = (folder / name).read_text(encoding="utf-8")
        referenced |= {
            used
            for used in meta.find_referenced_templates(environment.parse(source))
            if used is not None
        }
    unused = sorted(partials - referenced)
    assert not unused, f"partials no template uses: {unused}"
    return names, partials


def check_templates() -> dict[str, Any]:
    """Render every shipped template the way the worker does; returns samples for the schemas."""
    names, partials = template_files()
    templates = RecordingTemplates.load(None)
    assert isinstance(templates, RecordingTemplates)
    composer = EmailComposer(templates, "quota@acme.example", "Quota Alerts")
    notifier = Notifier(WebhookConfig(), None, composer)
    org = sample_org()
    options = org["event_options"]
    crossing = Crossing(80.0, 1600, NOW - 1800, NOW + 1800, NOW)
    key_trigger = trigger_event("key", org_id=ORG_ID, key=KEY, quota_max=2000, crossing=crossing)
    never = crossing._replace(period_end=NEVER)
    org_trigger = trigger_event("org", org_id=ORG_ID, key="", quota_max=2000, crossing=never)
    emails = sent(
        notifier.trigger_emails(key_trigger, developer_email=DEVELOPER, org_options=options),
        2,
        "key trigger",
    )
    sent(notifier.trigger_emails(org_trigger, developer_email=None, org_options=options), 1, "org")
    portal_events = []
    for index, name in enumerate(sorted(EVENT_NAMES)):
        record = {"event": name, "org_id": ORG_ID, "data": PORTAL_DATA, "id": f"evt_{index}"}
        event = decode_portal_event(orjson.dumps(record), default_id=f"evt_default_{index}")
        portal_events.append(record)
        # The org's address, and the developer's for their own key requests and sign-up.
        to_developer = name.startswith(("key_request_event.", "developer_event."))
        sent(notifier.portal_deliveries(event, options), 1 + to_developer, name)
    requests = [
        {"id": record["id"], "event": record["event"], "data": record["data"]}
        for record in portal_events
        if str(record["event"]).startswith("key_request_event.")
    ]
    sent([composer.digest(ORG_DESK, ORG_ID, requests)], 1, "digest")
    rendered = templates.rendered
    not_rendered = sorted(set(TEMPLATE_NAMES) - set(rendered))
    assert not not_rendered, f"templates never rendered: {not_rendered}"
    count = sum(len(done) for done in rendered.values())
    report(
        f"templates: {len(names)} pairs and {len(partials)} partials shipped; "
        f"{count} emails rendered from {templates_dir()}"
    )
    return {
        "key_trigger": key_trigger,
        "org_trigger": org_trigger,
        "portal_events": portal_events,
        "email_job": emails[0],
    }


# --- schemas -----------------------------------------------------------------------------------


def sample_session() -> dict[str, Any]:
    return {
        "org_id": ORG_ID,
        "quota_max": 2000,
        "quota_renewal_rate": 3600,
        "monitor": {"trigger_limits": [80.0, 50.0]},
        "meta_data": {"developer_email": DEVELOPER},
    }


def sample_org() -> dict[str, Any]:
    return {
        "org_id": ORG_ID,
        "quota_max": -1,
        "quota_renewal_rate": 0,
        "event_options": {
            option: {"email": ORG_DESK, "webhook": f"https://hooks.example.com/{option}"}
            for option in ("trigger_event", *sorted({n.split(".")[0] for n in EVENT_NAMES}))
        },
    }


def schema_samples(made: dict[str, Any]) -> dict[str, list[Any]]:
    """Payloads of each schema, as the package emits them or as its decoders accept them."""
    request = {"ts": NOW, "org_id": ORG_ID, "key": KEY, "api_id": "api-9", "count": 3}
    decoded = decode_request(KEY.encode(), orjson.dumps(request))
    assert decoded.count == 3, decoded
    session, org = sample_session(), sample_org()
    assert decode_session(orjson.dumps(session)) is not None
    assert decode_org(orjson.dumps(org)) is not None
    bad_value = orjson.dumps({"ts": "yesterday", "org_id": ORG_ID, "key": KEY})
    try:
        decode_request(KEY.encode(), bad_value)
    except InvalidRecord as exc:
        reason = exc.reason
    else:
        raise AssertionError("a request with a string ts was accepted")
    rejected = rejection(
        topic="gateway.requests",
        partition=1,
        offset=42,
        key=KEY.encode(),
        value=bad_value,
        reason=reason,
        now=NOW,
    )
    email_job: DeliveryJob = made["email_job"]
    failure = PermanentDeliveryError("550 5.1.1 no such user", status=550)
    email_letter = dead_letter(email_job.attempted(NOW, failure, None), str(failure))
    webhook_job = Notifier.org_webhook(made["key_trigger"], "https://hooks.example.com/quota")
    assert isinstance(webhook_job, DeliveryJob)
    gone = PermanentDeliveryError("HTTP 410 Gone", status=410)
    webhook_letter = dead_letter(webhook_job.attempted(NOW, gone, None), str(gone))
    return {
        "request_count.json": [request],
        "session.json": [session],
        "org.json": [org],
        "trigger_event.json": [made["key_trigger"], made["org_trigger"]],
        "portal_event.json": made["portal_events"],
        "rejected.json": [orjson.loads(rejected)],
        "dead_letter.json": [orjson.loads(email_letter), orjson.loads(webhook_letter)],
    }


def check_schemas(samples: dict[str, list[Any]]) -> None:
    folder = schemas_dir()
    shipped = sorted(path.name for path in folder.glob("*.json"))
    assert shipped, f"no schemas in {folder}"
    unsampled = sorted(set(shipped) - set(samples))
    assert not unsampled, f"schemas without a sample payload here: {unsampled}"
    missing = sorted(set(samples) - set(shipped))
    assert not missing, f"schemas missing from {folder}: {missing}"
    for name in shipped:
        schema = json.loads((folder / name).read_text(encoding="utf-8"))
        Draft202012Validator.check_schema(schema)
        validator = Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)
        for payload in samples[name]:
            errors = [error.message for error in validator.iter_errors(payload)]
            assert not errors, f"{name}: {errors} in {payload}"
    count = sum(len(samples[name]) for name in shipped)
    report(f"schemas: {len(shipped)} shipped; {count} payloads valid in {folder}")


# --- the ops page --------------------------------------------------------------------------


def check_ops_pages() -> None:
    """Every page template of the ops page ships and renders (pipeline.ops.render), empty."""
    from pipeline.ops.letters import LetterFilter
    from pipeline.ops.render import render

    folder = templates_dir() / "ops"
    pages = {
        "login.html": {"failed": True},
        "error.html": {"message": "m"},
        "overview.html": {
            "csrf": "c",
            "now": 0.0,
            "refresh": 15,
            "workers": [],
            "missing": [("http://w", "unreachable")],
            "keys": [],
            "orgs": [],
            "triggers": [],
            "endpoints": {},
        },
        "dlq.html": {
            "csrf": "c",
            "now": 0.0,
            "filters": LetterFilter(),
            "rows": [],
            "matching": 0,
            "total": 0,
            "events": [],
            "redriven": None,
            "cut": None,
        },
        "subject.html": {
            "csrf": "c",
            "now": 0.0,
            "kind": "org",
            "subject": "o",
            "view": {
                "usage": 0,
                "quota_max": 0,
                "usage_percentage": None,
                "period_start": None,
                "period_end": None,
                "thresholds": [],
                "fired": [],
            },
            "chart": None,
        },
    }
    shipped = {path.name for path in folder.glob("*.html") if not path.name.startswith("_")}
    assert shipped == set(pages), f"{folder}: {sorted(shipped)}"
    for name, context in pages.items():
        assert "</html>" in render(name, **context), name
    report(f"ops page: {len(pages)} templates render")


def main() -> None:
    check_installed()
    check_ops_pages()
    made = check_templates()
    check_schemas(schema_samples(made))
    report("wheel check: OK")


if __name__ == "__main__":
    main()
