"""Which thresholds watch a subject, and the compact form of subjects kept in tables (pure)."""

from __future__ import annotations

from typing import Any, NamedTuple

from pipeline.config import MonitorConfig
from pipeline.records.subjects import Org, Quota, Session
from pipeline.usage.quota import Limits


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


def _compact_quota(quota: Quota) -> dict[str, Any]:
    return {
        "quota_max": quota.quota_max,
        "quota_renewal_rate": quota.quota_renewal_rate,
        "trigger_limits": list(quota.monitor.trigger_limits),
    }


def _limits(data: dict[str, Any], monitor: MonitorConfig, *, watched: bool) -> Limits:
    return Limits(
        quota_max=data["quota_max"],
        renewal_rate=data["quota_renewal_rate"],
        thresholds=thresholds_for(tuple(data["trigger_limits"]), monitor, watched=watched),
    )


def compact_session(session: Session) -> dict[str, Any]:
    """The few fields of a (possibly large) Tyk session that the pipeline reads."""
    return {
        **_compact_quota(session),
        "org_id": session.org_id,
        "developer_email": session.developer_email,
    }


def compact_org(org: Org) -> dict[str, Any]:
    """An org's quota and where its events go."""
    return {
        **_compact_quota(org),
        "event_options": {
            name: target.model_dump(exclude_none=True) for name, target in org.event_options.items()
        },
    }


def watched_key(data: dict[str, Any], monitor: MonitorConfig) -> WatchedKey:
    """Read back :func:`compact_session` and apply the monitor config to it."""
    return WatchedKey(
        org_id=data["org_id"],
        limits=_limits(data, monitor, watched=monitor.monitor_user_keys),
        developer_email=data["developer_email"],
    )


def org_limits(data: dict[str, Any], monitor: MonitorConfig) -> Limits:
    """Read back :func:`compact_org`'s quota and apply the monitor config to it."""
    return _limits(data, monitor, watched=monitor.monitor_org_keys)
