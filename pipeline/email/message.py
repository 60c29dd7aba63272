"""One email as a delivery job (:class:`EmailRequest`) and the MIME message built from it (pure).

Header values are checked here, once, for every provider: a line break in a subject, name or
address would let event data add headers (``Bcc:``), so it is a permanent delivery error and
nothing is sent.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import re
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from email import policy
from email.errors import HeaderParseError
from email.headerregistry import Address, BaseHeader, HeaderRegistry
from email.message import EmailMessage
from email.policy import Policy
from typing import Any

import orjson

from pipeline.errors import PermanentDeliveryError

#: Carries the event id on every email, so receivers and support can trace and de-duplicate.
EVENT_ID_HEADER = "X-Quota-Pipeline-Event-Id"
MESSAGE_ID_DOMAIN = "quota-pipeline"

# An id that is already a safe msg-id left part is kept readable; anything else is hashed.
_DOT_ATOM = re.compile(r"[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*")


@dataclass(frozen=True, slots=True)
class EmailRequest:
    """One email to one recipient, ready to send; travels through the retry topics as JSON."""

    #: The event this email tells about; the same on every attempt.
    event_id: str
    #: One recipient address (an addr-spec: ``dev@example.com``).
    to: str
    subject: str
    #: The text/plain part.
    text: str
    #: The text/html part.
    html: str
    from_email: str
    #: Display name of the sender; may be empty.
    from_name: str

    def to_json(self) -> bytes:
        return orjson.dumps(self)

    @classmethod
    def from_json(cls, raw: bytes) -> EmailRequest:
        """Decode :meth:`to_json`'s bytes; a damaged job is a permanent delivery error."""
        try:
            value = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise PermanentDeliveryError(f"email job is not JSON: {exc}") from exc
        if not isinstance(value, dict):
            raise PermanentDeliveryError("email job is not a JSON object")
        names = [field.name for field in dataclasses.fields(cls)]
        bad = [name for name in names if not isinstance(value.get(name), str)]
        if bad:
            raise PermanentDeliveryError(f"email job lacks string fields: {', '.join(bad)}")
        return cls(**{name: value[name] for name in names})


def _refuse_line_breaks(request: EmailRequest) -> None:
    for field in ("event_id", "to", "subject", "from_email", "from_name"):
        value: str = getattr(request, field)
        # splitlines() knows every break a mail reader might honour, not only CR and LF.
        if len((value + ".").splitlines()) > 1:
            raise PermanentDeliveryError(f"{field} contains a line break: refusing to send")


@functools.lru_cache(maxsize=4096)  # senders and org desks repeat; parsing cost 6% per email
def _address(field: str, addr_spec: str, display_name: str = "") -> Address:
    try:
        parsed = Address(addr_spec=addr_spec)
    except (ValueError, IndexError, HeaderParseError) as exc:
        raise PermanentDeliveryError(f"{field} {addr_spec!r} is not an email address") from exc
    if not parsed.username or not parsed.domain:
        raise PermanentDeliveryError(f"{field} {addr_spec!r} is not an email address")
    try:
        # The header registry would write a non-ASCII domain as an encoded word, which no
        # server can route; IDNA is the form DNS and SMTP understand.
        domain = parsed.domain.encode("idna").decode("ascii")
    except UnicodeError as exc:
        raise PermanentDeliveryError(f"{field} {addr_spec!r} has an invalid domain") from exc
    return Address(display_name=display_name, username=parsed.username, domain=domain)


def addresses(request: EmailRequest) -> tuple[Address, Address]:
    """The sender and the recipient, once every header value is known to be one line."""
    _refuse_line_breaks(request)
    sender = _address("from_email", request.from_email, request.from_name)
    return sender, _address("to", request.to)


def message_id(request: EmailRequest) -> str:
    """The same Message-ID on every attempt, distinct per recipient of one event."""
    if _DOT_ATOM.fullmatch(request.event_id):
        left = request.event_id
    else:
        left = hashlib.sha256(request.event_id.encode()).hexdigest()[:32]
    recipient = hashlib.sha256(request.to.strip().lower().encode()).hexdigest()[:16]
    return f"<{left}.{recipient}@{MESSAGE_ID_DOMAIN}>"


class _FoldedOnce(BaseHeader):
    """A header that keeps its folded form: a header shared by many emails (see
    :class:`_ReusedHeaders`) is folded once, not once per email (folding walks the parse tree
    again: a quarter of the time per email)."""

    def fold(self, *, policy: Policy) -> str:
        folded: tuple[Policy, str] | None = getattr(self, "_folded", None)
        if folded is None or folded[0] is not policy:
            folded = (policy, super().fold(policy=policy))
            self._folded = folded
        return folded[1]


#: Headers whose values repeat from email to email (a subject, a date or an id never does).
_REPEATING = frozenset(("from", "to", "mime-version", "content-type", "content-transfer-encoding"))


class _ReusedHeaders(HeaderRegistry):
    """The standard registry, but each header class is made once, and a header whose value was
    seen before is parsed once.

    HeaderRegistry builds a new class with ``type()`` for every header of every message, and
    parses every value into a tree (the MIME headers of each part, the sender, a recipient of
    many emails: the same strings each time). Those were half the time per email in
    `quota-pipeline bench`. Header objects are immutable strings, so a message can share them.
    """

    @functools.cache  # noqa: B019 - one registry for the process; its cache is the point
    def __getitem__(self, name: str) -> type[BaseHeader]:
        return super().__getitem__(name.lower())

    def __call__(self, name: str, value: Any) -> BaseHeader:
        if type(value) is str and name.lower() in _REPEATING:
            return self._parsed(name, value)
        return super().__call__(name, value)

    @functools.lru_cache(maxsize=1024)  # noqa: B019 - as above
    def _parsed(self, name: str, value: str) -> BaseHeader:
        return super().__call__(name, value)


#: policy.SMTP (CRLF line ends), with header classes made once and repeated values parsed once.
SMTP_POLICY = policy.SMTP.clone(header_factory=_ReusedHeaders(base_class=_FoldedOnce))


def build_message(request: EmailRequest, *, now: float | None = None) -> EmailMessage:
    """The multipart/alternative message (text, then HTML) with every header set.

    ``now`` (unix seconds) is the Date header; the current time when None.
    """
    sender, recipient = addresses(request)
    message = EmailMessage(policy=SMTP_POLICY)
    try:
        message["From"] = str(sender)
        message["To"] = str(recipient)
        message["Subject"] = request.subject
        message["Date"] = datetime.fromtimestamp(time.time() if now is None else now, tz=UTC)
        message["Message-ID"] = message_id(request)
        message[EVENT_ID_HEADER] = request.event_id
    except (ValueError, HeaderParseError) as exc:
        raise PermanentDeliveryError(f"cannot build the email's headers: {exc}") from exc
    message.set_content(request.text, subtype="plain")
    # A boundary of our own: left unset, flattening searched both parts for a string absent
    # from them and parsed Content-Type again to add it (a sixth of the time per email). 128
    # random bits cannot be guessed by whoever writes the event data in the parts.
    message.make_alternative(boundary=f"=_{uuid.uuid4().hex}")
    message.add_alternative(request.html, subtype="html")
    return message
