"""``quota.sessions`` and ``quota.orgs`` records: a key's Session and an Org, as value types,
and their decoding (pure).

Unknown fields are ignored, so a full Tyk session object loads as a :class:`Session`; the
fields we read are checked strictly ("1000" is not a number).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from pipeline.errors import InvalidRecord
from pipeline.records.checks import (
    MAX_EMAIL_LENGTH,
    MAX_ID_LENGTH,
    MAX_URL_LENGTH,
    decode_json_object,
    format_number,
    is_email_address,
    is_http_url,
    quoted,
    subject_key,
    validation_message,
)


class _Lenient(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class MonitorSettings(_Lenient):
    """A session's own ``monitor`` object."""

    trigger_limits: tuple[float, ...] = ()

    @field_validator("trigger_limits", mode="before")
    @classmethod
    def _null_is_empty(cls, value: Any) -> Any:
        # Tyk writes null for no limits; a JSON array arrives here as a list.
        if value is None:
            return ()
        return tuple(value) if isinstance(value, list) else value

    @field_validator("trigger_limits")
    @classmethod
    def _percentages(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        for limit in value:
            if not 0 < limit <= 100:
                raise ValueError(f"trigger limit {format_number(limit)} is outside (0, 100]")
        return value


class Quota(_Lenient):
    """The quota fields a key session and an org share."""

    quota_max: float = -1
    quota_renewal_rate: float = -1
    monitor: MonitorSettings = Field(default_factory=MonitorSettings)

    @field_validator("monitor", mode="before")
    @classmethod
    def _null_monitor(cls, value: Any) -> Any:
        return {} if value is None else value

    @property
    def unlimited(self) -> bool:
        return self.quota_max <= 0

    @property
    def renews(self) -> bool:
        return self.quota_renewal_rate > 0


class Session(Quota):
    """A key's session (``quota.sessions``): Tyk's session object, of which we read a few fields."""

    org_id: str = Field(default="", max_length=MAX_ID_LENGTH)
    meta_data: dict[str, Any] = Field(default_factory=dict)
    #: Tyk resets a key's quota when the key is updated with this set.
    reset_quota: bool = False

    @field_validator("meta_data", mode="before")
    @classmethod
    def _null_meta(cls, value: Any) -> Any:
        return {} if value is None else value

    @property
    def developer_email(self) -> str | None:
        email = self.meta_data.get("developer_email")
        return email if isinstance(email, str) and email else None


class EventTarget(_Lenient):
    """Where one family of an org's events goes. Tyk writes "" for none."""

    webhook: str | None = None
    email: str | None = None

    @field_validator("webhook")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if not value:
            return None
        if len(value) > MAX_URL_LENGTH or not is_http_url(value):
            raise ValueError(f"{quoted(value)} is not an http(s) URL")
        return value

    @field_validator("email")
    @classmethod
    def _address(cls, value: str | None) -> str | None:
        if not value:
            return None
        if len(value) > MAX_EMAIL_LENGTH or not is_email_address(value):
            raise ValueError(f"{quoted(value)} is not an email address")
        return value


class Org(Quota):
    """An organisation (``quota.orgs``): its own quota and where its events go."""

    event_options: dict[str, EventTarget] = Field(default_factory=dict)

    @field_validator("event_options", mode="before")
    @classmethod
    def _null_options(cls, value: Any) -> Any:
        return {} if value is None else value


def _validate(model: type[_Lenient], raw: bytes) -> Any:
    decode_json_object(raw)  # for its clear reasons when the value is not a JSON object
    try:
        # Strict: "1000" is not a number and "80" is not a limit, as the JSON Schemas say.
        return model.model_validate_json(raw, strict=True)
    except ValidationError as exc:
        errors = exc.errors()
        said = [
            f"{'.'.join(str(part) for part in error['loc'])}: {validation_message(error['msg'])}"
            for error in errors[:3]
        ]
        more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
        raise InvalidRecord("; ".join(said) + more) from exc


def decode_session(raw: bytes | None) -> Session | None:
    """Decode a ``quota.sessions`` value; None is a tombstone (stop monitoring the key)."""
    if raw is None:
        return None
    session: Session = _validate(Session, raw)
    return session


def decode_org(raw: bytes | None) -> Org | None:
    """Decode a ``quota.orgs`` value; None is a tombstone."""
    if raw is None:
        return None
    org: Org = _validate(Org, raw)
    return org


def decode_session_record(key: bytes | None, raw: bytes | None) -> tuple[str, Session | None]:
    """A ``quota.sessions`` record: the API key and its session, or None (a tombstone)."""
    return subject_key(key, "API key"), decode_session(raw)


def decode_org_record(key: bytes | None, raw: bytes | None) -> tuple[str, Org | None]:
    """A ``quota.orgs`` record: the org id and its org, or None (a tombstone)."""
    return subject_key(key, "org id"), decode_org(raw)
