"""The contract's payloads as value types, and their decoding from topic bytes.

Decoders raise :class:`InvalidRecord` with a reason a person can act on; the agents send that
reason to ``pipeline.rejected``. Unknown fields are ignored everywhere, so a full Tyk session
object loads as a :class:`Session`.
"""

from __future__ import annotations

from decimal import Decimal
from email.headerregistry import Address
from math import isfinite
from typing import Annotated, Any

import msgspec
import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from yarl import URL

from pipeline.errors import InvalidRecord

MAX_COUNT = 1_000_000_000
#: The longest API key or org id accepted, in characters. Every event about a subject carries
#: its id (in its record key and its value, its webhook and its email): a bound keeps each of
#: them far below Kafka's record limit, whatever a gateway sends. Tyk's keys are 32 to 100
#: characters; a JWT used as a key stays below 4,096.
MAX_ID_LENGTH = 4096
#: The longest webhook URL taken (browsers and proxies stop near here), and the longest email
#: address (RFC 5321's path limit).
MAX_URL_LENGTH = 8192
MAX_EMAIL_LENGTH = 254
#: How much of a value a reason quotes.
QUOTED_CHARS = 80


def format_number(value: float) -> str:
    """A number as a person wrote it: "80", "82.5", "100.0001", "0.00001"; never an exponent.

    The shortest repr of the float keeps distinct numbers distinct.
    """
    return format(Decimal(repr(float(value))).normalize(), "f")


def quoted(value: str) -> str:
    """``value`` in quotes for a reason, cut to QUOTED_CHARS: reasons never carry a payload."""
    if len(value) > QUOTED_CHARS:
        value = value[:QUOTED_CHARS] + f"… ({len(value)} characters)"
    return repr(value)


class RequestCount(msgspec.Struct, frozen=True, gc=False):
    """Requests one gateway saw for one key (``gateway.requests``).

    A msgspec Struct: one is decoded per record on the hottest path, and msgspec decodes it
    and checks the constraints below in C (:func:`decode_request_count`); like the checks of
    :func:`_checked_request_count` it keeps bools out of numbers and rejects numbers beyond a
    double. ``gc=False``: no field is a container, so the collector need not track it.
    """

    #: Event time at the gateway, unix seconds.
    ts: float
    #: Organisation the key belongs to.
    org_id: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_ID_LENGTH)]
    #: The API key, as the gateway knows it.
    key: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_ID_LENGTH)]
    #: Requests in this record: gateways may pre-aggregate.
    count: Annotated[int, msgspec.Meta(ge=1, le=MAX_COUNT)] = 1
    #: API the requests went to, when the gateway says.
    api_id: str | None = None


_decode_valid_request_count = msgspec.json.Decoder(RequestCount).decode


def decode_json_object(raw: bytes | None) -> dict[str, Any]:
    """Parse one record value as a JSON object."""
    if raw is None:
        raise InvalidRecord("record has no value")
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRecord(f"value is not JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise InvalidRecord(f"value is a JSON {type(value).__name__}, not an object")
    return value


def decode_request_count(raw: bytes | None) -> RequestCount:
    """Decode and validate one ``gateway.requests`` value.

    A valid value takes msgspec's decoder (0.4 µs a record, against 1.8 µs for orjson and the
    checks in Python: a fifth of a worker's time on a backlog). Whatever it refuses goes
    through :func:`_checked_request_count`, which says what is wrong (or takes a value msgspec
    alone refused; a property test holds the two to the same answers).
    """
    if raw is not None:
        try:
            return _decode_valid_request_count(raw)
        # msgspec.ValidationError is a DecodeError too. RecursionError: a value nested a few
        # thousand levels deep; orjson's own depth limit then says what is wrong.
        except (msgspec.DecodeError, RecursionError):
            pass
    return _checked_request_count(raw)


def subject_key(raw: bytes | None, name: str) -> str:
    """The subject a record is keyed by (an API key, an org id), decoded and checked."""
    if not raw:
        raise InvalidRecord(f"the record key must be the {name}")
    try:
        key = raw.decode()
    except UnicodeDecodeError as exc:
        raise InvalidRecord(f"the record key ({name}) is not UTF-8") from exc
    if len(key) > MAX_ID_LENGTH:
        raise InvalidRecord(f"the {name} must be at most {MAX_ID_LENGTH} characters")
    return key


def decode_request(key: bytes | None, raw: bytes | None) -> RequestCount:
    """Decode one ``gateway.requests`` record: its value, and its key, which must be the API
    key the value names. A record keyed otherwise sits in a partition where its session is
    not (the key decides the partition), so it could not be counted right.

    :func:`decode_request_count` inlined: this is the hottest call of the usage stage.
    """
    try:
        request = _decode_valid_request_count(raw)  # type: ignore[arg-type]
    # As in decode_request_count; TypeError: no value at all.
    except (msgspec.DecodeError, RecursionError, TypeError):
        request = _checked_request_count(raw)
    if key != request.key.encode():
        if key is None:
            raise InvalidRecord("the record has no key: it must be the API key (value.key)")
        raise InvalidRecord("the record key differs from value.key: it must be the API key")
    return request


def _checked_request_count(raw: bytes | None) -> RequestCount:
    """Decode one ``gateway.requests`` value with a check per field, naming the field that is
    wrong. type() rather than isinstance: it also keeps bool out."""
    get = decode_json_object(raw).get
    ts, org_id, key, count, api_id = (
        get("ts"),
        get("org_id"),
        get("key"),
        get("count", 1),
        get("api_id"),
    )
    if not ((type(ts) is float and isfinite(ts)) or type(ts) is int):
        raise InvalidRecord("ts must be a number of unix seconds")
    if type(org_id) is not str or not org_id:
        raise InvalidRecord("org_id must be a non-empty string")
    if len(org_id) > MAX_ID_LENGTH:
        raise InvalidRecord(f"org_id must be at most {MAX_ID_LENGTH} characters")
    if type(key) is not str or not key:
        raise InvalidRecord("key must be a non-empty string")
    if len(key) > MAX_ID_LENGTH:
        raise InvalidRecord(f"key must be at most {MAX_ID_LENGTH} characters")
    if type(count) is not int:
        raise InvalidRecord("count must be an integer")
    if not 1 <= count <= MAX_COUNT:
        raise InvalidRecord(f"count must be between 1 and {MAX_COUNT}")
    if api_id is not None and type(api_id) is not str:
        raise InvalidRecord("api_id must be a string")
    return RequestCount(float(ts), org_id, key, count, api_id)


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


def is_http_url(value: str) -> bool:
    """Whether ``value`` is an absolute http or https URL with a host."""
    try:
        url = URL(value)
    except ValueError:
        return False
    return url.scheme in ("http", "https") and bool(url.raw_host)


def is_email_address(value: str) -> bool:
    """Whether ``value`` is one RFC 5322 address (``local@domain``), as the email module
    parses it."""
    try:
        address = Address(addr_spec=value)
    except Exception:  # the parser raises several types, IndexError included, for bad input
        return False
    return bool(address.username and address.domain)


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


def validation_message(message: str) -> str:
    """pydantic's message for one error, without the prefix it gives our own validators'."""
    return message.removeprefix("Value error, ")


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
