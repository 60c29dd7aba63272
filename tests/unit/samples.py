"""Values several unit tests of the ops page and the delivery activity share."""

from __future__ import annotations

from typing import Any

from pipeline.config import Settings

#: An API key as a gateway issues them: long enough that its masked form hides it.
KEY = "sk_live_0123456789abcdef4711"
T0 = 1764331200.0
#: The monitor watching keys and orgs at 50% and 80%.
WATCHING = Settings.model_validate(
    {
        "monitor": {
            "enable_trigger_monitors": True,
            "monitor_user_keys": True,
            "monitor_org_keys": True,
            "global_trigger_limits": [50, 80],
        }
    }
).monitor


def trigger(
    event_id: str = "evt_1", key: str = KEY, *, ts: float = T0 - 2, **changes: Any
) -> dict[str, Any]:
    """A TriggerExceeded event of a key (an org's with ``key=""``) at 80%."""
    return {
        "id": event_id,
        "event": "TriggerExceeded",
        "message": "Quota trigger reached",
        "subject": "key" if key else "org",
        "org": "acme",
        "key": key,
        "trigger_limit": "80",
        "usage_percentage": 81.5,
        "usage": 815,
        "quota_max": 1000,
        "ts": ts,
        **changes,
    }
