"""The pass's pure parts (pipeline.sync.run): --tyk-gateway over the config, and the summary
line."""

from __future__ import annotations

import pytest

from pipeline.config import TykSettings
from pipeline.errors import UsageError
from pipeline.sync.changes import OrgChanges, SessionChanges
from pipeline.sync.run import PassReport, gateway_settings


def test_tyk_gateway_replaces_the_configured_url_and_keeps_the_rest() -> None:
    tyk = TykSettings(gateway_url="http://a:8080", gateway_secret="s", concurrency=7)
    given = gateway_settings(tyk, "https://b:8443/")
    assert given.gateway_url == "https://b:8443"
    assert given.concurrency == 7
    assert given.gateway_secret is not None
    assert given.gateway_secret.get_secret_value() == "s"
    assert gateway_settings(tyk, None) is tyk


def test_tyk_gateway_that_is_not_a_url_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="--tyk-gateway: 'tyk:8080' is not an http"):
        gateway_settings(TykSettings(), "tyk:8080")


def test_the_summary_line() -> None:
    sessions = SessionChanges(
        records=[("a", b"{}")] * 13,
        tombstones=["x", "y"],
        new=10,
        changed=3,
        unchanged=985,
        invalid=[],
    )
    orgs = OrgChanges(records=[("o", b"{}")], unchanged=11, invalid=[])
    report = PassReport("http://tyk:8080", sessions, orgs, 0.1, 0.8, 0.1, 0.3, 1.43)
    assert report.line() == (
        "synced 1000 sessions from http://tyk:8080: 10 new, 3 changed, 2 gone, 985 unchanged; "
        "12 orgs (1 changed) in 1.4 s"
    )
    assert report.published == 15
