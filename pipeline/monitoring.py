"""Which thresholds watch a subject, and the compact form of a subject kept in tables (pure)."""

from __future__ import annotations

from typing import Any, NamedTuple

from pipeline.config import MonitorConfig
from pipeline.models import Session
from pipeline.quota import Limits


class WatchedKey(NamedTuple):
    """What the usage agent needs of a key's session, decoded from the sessions table."""

    org_id: str
    limits: Limits
    developer_email: str | None


def thresholds_for(
    own: tuple[float, ...], monitor: MonitorConfig, *, watched: bool
) -> frozenset[float]:
    """A subject's own trigger limits when it has any, else the global ones (Tyk's rule)."""
    if not monitor.enable_trigger_monitors or not watched:
        return frozenset()
    return frozenset(own) if own else monitor.global_thresholds()


def compact_session(session: Session) -> dict[str, Any]:
    """The few fields of a (possibly large) Tyk session that the pipeline reads."""
    return {
        "org_id": session.org_id,
        "quota_max": session.quota_max,
        "quota_renewal_rate": session.quota_renewal_rate,
        "trigger_limits": session.monitor.trigger_limits,
        "developer_email": session.developer_email,
    }


def watched_key(data: dict[str, Any], monitor: MonitorConfig) -> WatchedKey:
    """Read back :func:`compact_session` and apply the monitor config to it."""
    own = tuple(data["trigger_limits"])
    return WatchedKey(
        org_id=data["org_id"],
        limits=Limits(
            quota_max=data["quota_max"],
            renewal_rate=data["quota_renewal_rate"],
            thresholds=thresholds_for(own, monitor, watched=monitor.monitor_user_keys),
        ),
        developer_email=data["developer_email"],
    )
