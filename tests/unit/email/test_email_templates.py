"""Email templates: every built-in pair renders, escaping, overrides, and load-time errors."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from pipeline.email import templates
from pipeline.email.filters import amount, catalogue_api, masked_key, person, utc_time
from pipeline.email.templates import TEMPLATE_NAMES, EmailTemplates
from pipeline.errors import ConfigError, PermanentDeliveryError
from pipeline.resources import templates_dir

HOSTILE = '<script>alert("x")</script> "&\''

TRIGGER = {
    "event": "TriggerExceeded",
    "message": "Quota trigger reached",
    "org": "org1",
    "key": "key-abcdef123456",
    "trigger_limit": "80",
    "id": "evt_0123456789abcdef",
    "subject": "key",
    "usage": 8000,
    "quota_max": 10000,
    "usage_percentage": 80,
    "period_start": 1764331200.25,
    "period_end": 1764334800.25,
    "ts": 1764333000.0,
}

#: Portal event names by template, with a payload carrying every field the templates use.
PORTAL = {
    "key_request_submitted": "key_request_event.submitted",
    "key_request_approved": "key_request_event.approved",
    "key_request_rejected": "key_request_event.rejected",
    "developer_signed_up": "developer_event.signed_up",
    "developer_approved": "developer_event.approved",
    "developer_rejected": "developer_event.rejected",
    "api_event": "api_event.updated",
    "key_event": "key_event.deleted",
}
FULL_DATA = {
    "id": "kr-77",
    "by_user": "dev-42",
    "email": "dev@example.com",
    "portal_developer": {"email": "dev@example.com"},
    "catalogue_entry": {"name": "Pets API"},
    "name": "Pets API",
    "api_id": "api-9",
}


def context_for(name: str, data: dict[str, Any] | None = None) -> dict[str, Any]:
    if name == "trigger_exceeded":
        return dict(TRIGGER)
    if name == "key_request_digest":
        requests = [
            {"event": "key_request_event.submitted", "data": FULL_DATA if data is None else data},
            {"event": "key_request_event.approved", "data": {}},
        ]
        return {"org_id": "org1", "count": len(requests), "requests": requests}
    return {"event": PORTAL[name], "org_id": "org1", "data": FULL_DATA if data is None else data}


@pytest.fixture(scope="module")
def builtin() -> EmailTemplates:
    return EmailTemplates.load(None)


def test_every_template_name_has_a_sample() -> None:
    assert set(TEMPLATE_NAMES) == {"trigger_exceeded", "key_request_digest", *PORTAL}


@pytest.mark.parametrize("name", TEMPLATE_NAMES)
def test_every_builtin_pair_renders_subject_text_and_html(
    builtin: EmailTemplates, name: str
) -> None:
    rendered = builtin.render(name, context_for(name))

    assert rendered.subject
    assert "\n" not in rendered.subject
    assert "org1" in rendered.text or "Pets API" in rendered.text
    assert rendered.html.lstrip().startswith("<!DOCTYPE html>")
    assert f"<title>{rendered.subject}</title>" in rendered.html


@pytest.mark.parametrize("name", list(PORTAL))
def test_portal_templates_render_a_minimal_documented_payload(
    builtin: EmailTemplates, name: str
) -> None:
    rendered = builtin.render(name, context_for(name, data={}))

    assert "org1" in rendered.text
    assert "org1" in rendered.html


def test_trigger_text_tells_which_key_how_much_and_when_the_period_ends(
    builtin: EmailTemplates,
) -> None:
    rendered = builtin.render("trigger_exceeded", TRIGGER)

    assert rendered.subject == "Quota alert: API key …3456 reached 80% of its quota"
    assert "organisation org1" in rendered.text
    assert "8,000 of its 10,000 requests" in rendered.text
    assert "Quota renews:   2025-11-28 13:00 UTC" in rendered.text
    assert "evt_0123456789abcdef" in rendered.text
    # The raw key is a credential: only its tail shows, in every part.
    for part in (rendered.subject, rendered.text, rendered.html):
        assert "key-abcdef123456" not in part


def test_org_trigger_names_the_org_and_a_quota_that_never_renews(
    builtin: EmailTemplates,
) -> None:
    event = {**TRIGGER, "subject": "org", "key": "", "period_end": None}

    rendered = builtin.render("trigger_exceeded", event)

    assert rendered.subject == "Quota alert: Organisation org1 reached 80% of its quota"
    assert "Quota renews:   never" in rendered.text
    assert "never" in rendered.html


def test_portal_text_names_the_developer_and_the_api(builtin: EmailTemplates) -> None:
    rendered = builtin.render("key_request_approved", context_for("key_request_approved"))

    assert rendered.subject == "Key request for Pets API approved"
    assert "dev@example.com" in rendered.text
    assert "Request id:   kr-77" in rendered.text


def test_hostile_values_are_escaped_in_html_and_verbatim_in_text(
    builtin: EmailTemplates,
) -> None:
    event = {**TRIGGER, "subject": "org", "key": "", "org": HOSTILE}

    rendered = builtin.render("trigger_exceeded", event)

    assert HOSTILE in rendered.text
    assert HOSTILE in rendered.subject
    assert "<script>" not in rendered.html
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; &#34;&amp;&#39;" in rendered.html


def test_hostile_portal_data_is_escaped_in_html(builtin: EmailTemplates) -> None:
    data = {"portal_developer": {"email": HOSTILE}, "catalogue_entry": {"name": HOSTILE}}

    rendered = builtin.render("key_request_submitted", context_for("key_request_submitted", data))

    assert "<script>" not in rendered.html
    assert "&lt;script&gt;" in rendered.html
    assert HOSTILE in rendered.text


def test_a_line_break_from_event_data_is_folded_out_of_the_subject(
    builtin: EmailTemplates,
) -> None:
    rendered = builtin.render(
        "trigger_exceeded", {**TRIGGER, "subject": "org", "org": "a\r\nBcc: x"}
    )

    assert rendered.subject == "Quota alert: Organisation a Bcc: x reached 80% of its quota"


def test_a_missing_variable_is_a_permanent_delivery_error(builtin: EmailTemplates) -> None:
    event = {name: value for name, value in TRIGGER.items() if name != "usage"}

    with pytest.raises(PermanentDeliveryError, match=r"trigger_exceeded.*usage"):
        builtin.render("trigger_exceeded", event)


def test_an_unknown_template_name_is_a_programming_error(builtin: EmailTemplates) -> None:
    with pytest.raises(ValueError, match="no email template named 'nope'"):
        builtin.render("nope", {})


def test_an_override_replaces_one_file_by_name(tmp_path: Path) -> None:
    (tmp_path / "trigger_exceeded.txt").write_text(
        '{% set email_subject = "Custom: " ~ org %}Custom body for {{ org }}\n'
    )

    rendered = EmailTemplates.load(tmp_path).render("trigger_exceeded", TRIGGER)

    assert rendered.subject == "Custom: org1"
    assert rendered.text == "Custom body for org1\n"
    assert "8,000" in rendered.html  # the built-in HTML part still applies


def test_an_overridden_layout_frames_every_html_part(tmp_path: Path) -> None:
    (tmp_path / "_layout.html").write_text("<main>{% block body %}{% endblock %}</main>\n")

    loaded = EmailTemplates.load(tmp_path)

    for name in TEMPLATE_NAMES:
        assert loaded.render(name, context_for(name)).html.startswith("<main>")


def test_a_syntax_error_is_a_config_error_naming_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "key_event.html").write_text("<p>fine</p>\n<p>{{ org_id </p>\n")

    with pytest.raises(ConfigError, match=r"key_event\.html, line 2"):
        EmailTemplates.load(tmp_path)


def test_a_syntax_error_in_an_unused_file_is_still_found_at_load(tmp_path: Path) -> None:
    (tmp_path / "_footer.html").write_text("{% if %}\n")

    with pytest.raises(ConfigError, match=r"_footer\.html, line 1"):
        EmailTemplates.load(tmp_path)


def test_a_text_part_without_a_subject_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "api_event.txt").write_text("{{ org_id }}\n")

    with pytest.raises(ConfigError, match=r"api_event\.txt does not set email_subject"):
        EmailTemplates.load(tmp_path)


def test_a_missing_layout_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "api_event.html").write_text('{% extends "_frame.html" %}\n')

    with pytest.raises(ConfigError, match=r"api_event\.html uses _frame\.html, which is missing"):
        EmailTemplates.load(tmp_path)


def test_a_missing_builtin_file_is_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shutil.copytree(templates_dir() / "email", tmp_path / "email")
    (tmp_path / "email" / "key_event.html").unlink()
    monkeypatch.setattr(templates, "templates_dir", lambda: tmp_path)

    with pytest.raises(ConfigError, match=r"key_event\.html is missing"):
        EmailTemplates.load(None)


def test_an_overrides_folder_that_does_not_exist_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is not a folder"):
        EmailTemplates.load(tmp_path / "nowhere")


def test_utc_time_formats_unix_seconds() -> None:
    assert utc_time(1795874400) == "2026-11-28 14:00 UTC"
    assert utc_time(1795874459.9) == "2026-11-28 14:00 UTC"


def test_amount_groups_thousands_and_drops_a_whole_fraction() -> None:
    assert amount(1000000) == "1,000,000"
    assert amount(1000.0) == "1,000"
    assert amount(1234.5) == "1,234.5"


def test_masked_key_shows_only_the_tail() -> None:
    assert masked_key("5f1c0ffee0123456789abcd") == "…abcd"
    assert masked_key("short") == "…"


def test_person_prefers_the_events_own_address_then_the_developers() -> None:
    nested = {"portal_developer": {"email": "nested@x.example"}}
    assert person({"email": "own@x.example", **nested}, "nobody") == "own@x.example"
    assert person({"email": "", **nested}, "nobody") == "nested@x.example"
    assert person({"portal_developer": "not an object"}, "nobody") == "nobody"
    assert person({}, "nobody") == "nobody"


def test_catalogue_api_names_the_api_asked_for() -> None:
    assert catalogue_api({"catalogue_entry": {"name": "Pets API"}}) == "Pets API"
    assert catalogue_api({"catalogue_entry": None}) == "an API"
