"""pipeline.ops.render: the ops page's filters, and each page template rendered with the
context its route gives it (pipeline.ops.pages), autoescaped."""

from __future__ import annotations

import math
import re
from typing import Any, NamedTuple

import jinja2
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline import __version__
from pipeline.config import Settings
from pipeline.delivery.activity import DeliveryActivity, EndpointState, merge_snapshots
from pipeline.delivery.jobs import DeliveryJob, dead_letter
from pipeline.engine.activity import AgentActivity
from pipeline.errors import RetriableDeliveryError
from pipeline.ops.letters import LetterFilter, letter_rows
from pipeline.ops.nearest import key_row, nearest, org_row
from pipeline.ops.pages import chart_of
from pipeline.ops.render import ago, clock, percent, render
from pipeline.ops.triggers import trigger_rows
from pipeline.service.api_rules import key_quota, org_quota
from pipeline.usage.quota import Crossing, Period, UsageState
from pipeline.usage.triggers import trigger_event
from tests.unit.samples import WATCHING

#: 2025-11-28 12:00:00 UTC.
T0 = 1764331200.0
HOUR = 3600
NOW = T0 + 1800
KEY = "sk_live_0123456789abcdef4711"
EVIL = "<script>alert('x')</script>"
ESCAPED = "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;"
MONITOR = WATCHING


class Record(NamedTuple):
    """The fields of an aiokafka ConsumerRecord that the panels read."""

    partition: int
    offset: int
    timestamp: int
    value: bytes | None


def section(page: str, name: str) -> str:
    """The HTML of the page's ``<section id=name>``."""
    match = re.search(rf'<section id="{name}".*?</section>', page, re.DOTALL)
    assert match is not None, name
    return match.group(0)


# --- filters --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (None, "never"),
        (0, "now"),
        (0.99, "now"),
        (-5, "now"),
        (1, "1 s"),
        (59, "59 s"),
        (60, "1 min"),
        (150, "2 min"),
        (3600, "1 h"),
        (2 * 3600 + 60, "2 h"),
        (86400, "1 d"),
        (5 * 86400 + 3600, "5 d"),
    ],
)
def test_ago_reads_a_duration_at_a_glance(seconds: float | None, shown: str) -> None:
    assert ago(seconds) == shown


@pytest.mark.parametrize(
    ("ts", "shown"),
    [
        (None, "never"),
        (T0, "2025-11-28 12:00:00 UTC"),
        (T0 + 0.999, "2025-11-28 12:00:00 UTC"),
        (0, "1970-01-01 00:00:00 UTC"),
        (T0 + 86399, "2025-11-29 11:59:59 UTC"),
    ],
)
def test_clock_is_utc_to_the_second(ts: float | None, shown: str) -> None:
    assert clock(ts) == shown


def test_a_time_no_datetime_holds_is_shown_as_a_number() -> None:
    # An event time in milliseconds: the page still renders.
    assert clock(T0 * 1000) == "1764331200000"
    assert clock(math.nan) == "nan"


@given(st.floats())
def test_clock_never_raises(ts: float) -> None:
    assert clock(ts)


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (None, "n/a"),
        (0, "0.0%"),
        (92.5, "92.5%"),
        (33.333, "33.3%"),
        (100, "100.0%"),
        (150, "150.0%"),
    ],
)
def test_percent_has_one_decimal(value: float | None, shown: str) -> None:
    assert percent(value) == shown


# --- the overview ---------------------------------------------------------------------------------


def session(quota_max: int = 100, org: str = "acme") -> dict[str, Any]:
    return {
        "quota_max": quota_max,
        "quota_renewal_rate": HOUR,
        "trigger_limits": [],
        "org_id": org,
        "developer_email": None,
    }


def stored_org(quota_max: int = 1000) -> dict[str, Any]:
    return {
        "quota_max": quota_max,
        "quota_renewal_rate": HOUR,
        "trigger_limits": [],
        "event_options": {},
    }


def usage(used: int, fired: tuple[float, ...] = (), series: tuple[Any, ...] = ()) -> dict[str, Any]:
    period = Period(T0, T0 + HOUR, used, frozenset(fired))
    return UsageState(current=period, series=series).to_json()


def trigger(key: str = KEY, org: str = "acme", threshold: float = 80.0) -> dict[str, Any]:
    crossing = Crossing(threshold, 80, T0, T0 + HOUR, T0 + 600)
    subject = "key" if key else "org"
    return trigger_event(subject, org_id=org, key=key, quota_max=100, crossing=crossing)


def worker(
    url: str, keys: list[Any], orgs: list[Any], deliveries: DeliveryActivity, lag: int
) -> dict[str, Any]:
    """A worker's snapshot as pipeline.ops.snapshot builds it, through JSON as peers send it."""
    agents = AgentActivity()
    agents.observe("usage", 0.0123, NOW - 2)
    agents.observe("delivery", 1.5, NOW - 75)
    states = {"https://hooks.example": EndpointState("open", NOW - 30, NOW + 30, 1)}
    snapshot = {
        "worker": url,
        "version": __version__,
        "at": NOW,
        "keys": nearest(keys),
        "orgs": nearest(orgs),
        "agents": agents.snapshot(NOW),
        "lags": [
            {"topic": "gateway.requests", "partition": 0, "lag": 12},
            {"topic": "gateway.requests", "partition": 1, "lag": lag},
        ],
        "deliveries": deliveries.snapshot(NOW, states),
    }
    return orjson.loads(orjson.dumps(snapshot))


def overview_context(org: str = "acme", *, missing: list[tuple[str, str]] | None = None) -> Any:
    """The overview's context, as OpsPages.overview builds it from two workers."""

    def key(name: str, stored: dict[str, Any], used: dict[str, Any]) -> Any:
        return key_row(name, stored, used, monitor=MONITOR, now=NOW, secret=b"refs")

    first_keys = [
        key(KEY, session(org=org), usage(95, fired=(50.0, 80.0))),
        key("sk_live_other_key_00000000beef", session(), usage(42)),
    ]
    # The second worker holds a standby copy of the first key, behind; and an unlimited key.
    second_keys = [
        key(KEY, session(org=org), usage(90)),
        key("sk_live_unlimited_key_0000cafe", session(quota_max=0), usage(5)),
    ]
    orgs = [org_row(org, stored_org(), usage(925, fired=(80.0,)), monitor=MONITOR, now=NOW)]
    event = trigger(org=org)
    org_event = trigger(key="", org=org, threshold=50.0)
    first, second = DeliveryActivity(), DeliveryActivity()
    job = DeliveryJob(event["id"], "POST", "https://hooks.example/k/secret", b"{}", {}, event)
    first.record(
        "retrying", job.attempted(NOW - 60, RetriableDeliveryError("e", status=503), None), NOW - 60
    )
    second.record("delivered", job.attempted(NOW - 20, None, 200), NOW - 20)
    snapshots = [
        worker("http://w1:6066", first_keys, orgs, first, 50_000),
        worker("http://w2:6066", second_keys, [], second, 3),
    ]
    deliveries = merge_snapshots([snapshot["deliveries"] for snapshot in snapshots])
    outcomes = {entry["id"]: entry for entry in deliveries["events"]}
    records = [
        Record(0, 0, int(T0 * 1000), orjson.dumps(event)),
        Record(0, 1, int(T0 * 1000), orjson.dumps(org_event)),
    ]
    return {
        "csrf": "csrf-token-value",
        "now": NOW,
        "refresh": 15,
        "workers": snapshots,
        "missing": missing if missing is not None else [],
        "keys": nearest(row for snapshot in snapshots for row in snapshot["keys"]),
        "orgs": nearest(row for snapshot in snapshots for row in snapshot["orgs"]),
        "triggers": trigger_rows(records, outcomes),
        "endpoints": deliveries["endpoints"],
    }


def test_the_overview_shows_the_nearest_keys_masked() -> None:
    page = render("overview.html", **overview_context())
    keys = section(page, "nearest-keys")

    assert KEY not in page
    assert "sk_live" not in page
    # One row per key (the higher usage of the two workers'), highest first.
    assert keys.count("<tr>") == 1 + 2
    assert keys.index("…4711") < keys.index("…beef")
    assert "95 / 100" in keys
    assert "95.0%" in keys
    assert '<span class="tag fired" title="fired">80%</span>' in keys
    assert "in 30 min" in keys
    assert "2025-11-28 13:00:00 UTC" in keys
    # An unlimited key is no row.
    assert "cafe" not in page


def test_the_overview_shows_the_nearest_orgs_linked_to_their_view() -> None:
    orgs = section(render("overview.html", **overview_context()), "nearest-orgs")

    assert '<a href="/ops/orgs/acme">acme</a>' in orgs
    assert "925 / 1,000" in orgs
    assert "92.5%" in orgs
    assert '<span class="bar hot">' in orgs


def test_the_overview_shows_each_trigger_with_its_deliveries() -> None:
    triggers = section(render("overview.html", **overview_context()), "triggers")

    assert triggers.count("<tr data-event=") == 2
    assert "key <code>…4711</code>" in triggers
    assert '<div class="outcome-delivered"><span class="ok">delivered</span>' in triggers
    assert "https://hooks.example <span" in triggers
    assert "/k/secret" not in triggers
    assert "no outcome known since the workers started" in triggers
    assert "2025-11-28 12:10:00 UTC" in triggers


def test_the_overview_shows_the_endpoints_and_the_workers() -> None:
    page = render("overview.html", **overview_context())
    endpoints, flow = section(page, "endpoints"), section(page, "flow")

    assert '<tr data-endpoint="https://hooks.example">' in endpoints
    assert '<span class="bad">open</span>' in endpoints
    assert "probe in 30 s" in endpoints
    assert "http://w1:6066" in flow
    assert "http://w2:6066" in flow
    assert f'<span class="muted">{__version__}</span>' in flow
    assert '<td class="num warn">50,000</td>' in flow
    assert '<td>usage</td><td>2 s ago</td><td class="num">0.012 s</td>' in flow
    assert '<meta http-equiv="refresh" content="15">' in page
    assert 'value="csrf-token-value"' in page
    assert 'id="missing"' not in page


def test_the_overview_names_the_workers_that_did_not_answer() -> None:
    page = render(
        "overview.html",
        **overview_context(
            missing=[("http://w3:6066", "unreachable"), ("http://w4:6066", "answered 500")]
        ),
    )

    assert "Not shown: http://w3:6066 (unreachable), http://w4:6066 (answered 500)." in page


def test_an_empty_group_renders_its_empty_panels() -> None:
    context = {
        **overview_context(),
        "workers": [],
        "keys": [],
        "orgs": [],
        "triggers": [],
        "endpoints": {},
    }

    page = render("overview.html", **context)

    assert "No key has usage in an open period." in page
    assert "No org has usage in an open period." in page
    assert "No trigger yet." in page
    assert "No delivery since the workers started." in page


def test_an_org_id_from_outside_is_escaped_on_the_overview() -> None:
    page = render("overview.html", **overview_context(org=EVIL))

    assert "<script>" not in page
    assert ESCAPED in section(page, "nearest-keys")
    assert ESCAPED in section(page, "nearest-orgs")
    assert ESCAPED in section(page, "triggers")
    # In a link, the id is URL-encoded.
    assert '<a href="/ops/orgs/%3Cscript%3Ealert%28%27x%27%29%3C%2Fscript%3E">' in page


def test_a_field_the_view_forgot_fails_to_render() -> None:
    context = overview_context()
    del context["endpoints"]

    with pytest.raises(jinja2.UndefinedError, match="endpoints"):
        render("overview.html", **context)


# --- dead letters ---------------------------------------------------------------------------------


def letter(
    event_id: str, url: str, status: int | None, at: float, error: str, **event: Any
) -> bytes:
    full = {**trigger(), "id": event_id, **event}
    job = DeliveryJob(event_id, "POST", url, b"{}", {}, full)
    failure = RetriableDeliveryError(error, status=status)
    return dead_letter(job.attempted(at, failure, None), error)


def dlq_context(**changes: Any) -> dict[str, Any]:
    records = [
        Record(
            0, 0, 0, letter("evt_a", "https://a.example/s3cr3t", 503, T0, "endpoint answered 503")
        ),
        Record(0, 1, 0, letter("evt_b", "https://b.example/x", None, T0 + 60, f"timed out {EVIL}")),
        Record(
            1,
            0,
            0,
            letter("evt_c", "https://a.example/y", 410, T0 + 30, "gone", blob="x" * 300_000),
        ),
    ]
    rows = letter_rows(records)
    return {
        "csrf": "csrf-token-value",
        "now": NOW,
        "filters": LetterFilter(target="a.example", status="5xx"),
        "rows": rows,
        "matching": len(rows),
        "total": len(rows) + 4,
        "events": sorted({row["event"] for row in rows if row["event"]}),
        "redriven": None,
        "cut": None,
        **changes,
    }


def test_the_dead_letters_page_shows_each_letter_and_its_redrive() -> None:
    page = render("dlq.html", **dlq_context())
    dlq = section(page, "dlq")

    assert "(3 of 7)" in dlq
    assert re.findall(r'data-letter="([^"]+)"', dlq) == ["0:1", "1:0", "0:0"]
    assert '<input type="checkbox" name="ref" value="0:0" aria-label="pick evt_a">' in dlq
    assert '<button type="submit" name="only" value="0:0">Redrive</button>' in dlq
    assert "<td>https://a.example</td>" in dlq
    assert "s3cr3t" not in page
    assert KEY not in page
    assert "key <code>…4711</code> acme" in dlq
    assert "<td>no answer</td>" in dlq
    assert "2025-11-28 12:01:00 UTC" in dlq
    assert 'id="redriven"' not in dlq


def test_a_letter_cut_for_size_cannot_be_picked() -> None:
    dlq = section(render("dlq.html", **dlq_context()), "dlq")
    cut_row = re.search(r'<tr data-letter="1:0".*?</tr>', dlq, re.DOTALL)

    assert cut_row is not None
    assert "cannot redrive" in cut_row.group(0)
    assert 'name="ref"' not in cut_row.group(0)
    assert 'name="only"' not in cut_row.group(0)


def test_the_filters_are_kept_in_the_form_and_the_way_back() -> None:
    dlq = section(render("dlq.html", **dlq_context()), "dlq")

    assert '<input name="target" value="a.example"' in dlq
    assert '<option value="5xx" selected>5xx</option>' in dlq
    assert '<option value="TriggerExceeded" >TriggerExceeded</option>' in dlq
    back = "target=a.example&amp;event=&amp;status=5xx&amp;text="
    assert f'<input type="hidden" name="back" value="{back}">' in dlq


def test_after_a_redrive_the_page_says_how_many_and_how_many_were_cut() -> None:
    page = render("dlq.html", **dlq_context(redriven="2", cut="1"))

    assert "Queued 2 deliveries again" in page
    assert "1 letters kept only part of their event" in page
    assert "letters kept only part" not in render("dlq.html", **dlq_context(redriven="2", cut="0"))


def test_no_letter_renders_an_empty_panel() -> None:
    page = render("dlq.html", **dlq_context(rows=[], matching=0, total=0, events=[]))

    assert "No dead letter." in page
    assert 'id="redrive-selected"' not in page
    assert "No dead letter matches." in render("dlq.html", **dlq_context(rows=[], matching=0))


def test_error_text_and_filters_from_outside_are_escaped_on_the_dead_letters_page() -> None:
    filters = LetterFilter(target=EVIL, event=EVIL, status="", text='"><script>')
    page = render("dlq.html", **dlq_context(filters=filters, redriven=EVIL, cut=EVIL))

    assert "<script>" not in page
    assert '<td class="error">timed out &lt;script&gt;' in page  # escaped, and redacted
    assert f'<input name="target" value="{ESCAPED}"' in page
    assert 'value="&#34;&gt;&lt;script&gt;"' in page


# --- one subject ----------------------------------------------------------------------------------


def test_a_key_page_shows_its_quota_and_a_chart_of_its_period() -> None:
    series = ((T0 + 300, 20), (T0 + 900, 55), (T0 + 1500, 95))
    stored = usage(95, fired=(50.0, 80.0), series=series)
    view = key_quota(KEY, session(), stored, monitor=MONITOR, now=NOW)
    # The chart as the page makes it.
    chart = chart_of(stored, view, NOW)

    page = render(
        "subject.html", csrf="c", now=NOW, kind="key", subject=KEY, view=view, chart=chart
    )

    subject = section(page, "subject")
    assert f'Key <code>{KEY}</code> of <a href="/ops/orgs/acme">acme</a>' in subject
    assert "95 of 100 (95.0%)" in subject
    assert "2025-11-28 12:00:00 UTC to 2025-11-28 13:00:00 UTC" in subject
    assert '<span class="tag fired">80% fired</span>' in subject
    drawn = section(page, "chart")
    assert "<svg" in drawn
    assert f'<polyline points="{chart.polyline}"' in drawn
    assert chart.polyline.startswith("0.0,220.0 ")
    assert "80% ✓" in drawn
    assert ">now</text>" in drawn


def test_an_org_without_an_open_period_has_no_chart() -> None:
    view = org_quota("acme", stored_org(quota_max=0), None, monitor=MONITOR, now=NOW)

    page = render(
        "subject.html", csrf="c", now=NOW, kind="org", subject="acme", view=view, chart=None
    )

    assert "Organisation acme" in page
    assert "0 of unlimited (n/a)" in page
    assert "no open period" in page
    assert '<span class="tag">50%</span><span class="tag">80%</span>' in page
    assert "No usage in an open period yet." in page
    assert "<svg" not in page
    unwatched = org_quota("acme", stored_org(), None, monitor=Settings().monitor, now=NOW)
    assert "none watched" in render(
        "subject.html", csrf="c", now=NOW, kind="org", subject="acme", view=unwatched, chart=None
    )


def test_a_subject_from_outside_is_escaped_on_its_page() -> None:
    view = key_quota(EVIL, session(org=EVIL), usage(3), monitor=MONITOR, now=NOW)

    page = render(
        "subject.html", csrf="c", now=NOW, kind="key", subject=EVIL, view=view, chart=None
    )

    assert "<script>" not in page
    assert f"Key <code>{ESCAPED}</code> of" in page


# --- sign in and errors ---------------------------------------------------------------------------


def test_the_sign_in_page_has_the_token_field_and_says_when_it_was_wrong() -> None:
    page = render("login.html", failed=False)

    assert '<input type="password" id="token" name="token"' in page
    assert 'id="login-failed"' not in page
    # Not signed in: no navigation, no search, no sign out.
    assert "Sign out" not in page
    assert "/ops/search" not in page
    assert 'id="login-failed"' in render("login.html", failed=True)


def test_the_error_page_shows_its_message_escaped() -> None:
    page = render("error.html", message=f"No org with that id: {EVIL}")

    assert f'<p class="notice bad">No org with that id: {ESCAPED}</p>' in page
    assert "<script>" not in page
    assert "</html>" in page
