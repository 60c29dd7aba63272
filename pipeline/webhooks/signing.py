"""Standard Webhooks v1 signatures (pure).

The signed content is ``{webhook-id}.{webhook-timestamp}.{body}``; the signature is
``v1,<base64 HMAC-SHA256>``; several space-separated signatures let receivers rotate secrets.
Secrets look like ``whsec_<base64 of 24-64 random bytes>``.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
from collections.abc import Iterable

SECRET_PREFIX = "whsec_"  # noqa: S105 - a prefix, not a secret


@functools.lru_cache(maxsize=64)  # a handful of secrets, used on every attempt
def secret_bytes(secret: str) -> bytes:
    """The HMAC key of a ``whsec_`` secret."""
    encoded = secret.removeprefix(SECRET_PREFIX)
    try:
        return base64.b64decode(encoded, validate=True)
    except binascii.Error as exc:
        raise ValueError("a signing secret must be whsec_ followed by base64") from exc


def check_secret(secret: str) -> None:
    """Raise ValueError unless ``secret`` is ``whsec_`` followed by non-empty base64 (the
    form config takes; :func:`sign` also takes the base64 alone, as receivers' libraries do)."""
    if not secret.startswith(SECRET_PREFIX) or not secret_bytes(secret):
        raise ValueError("a signing secret must be whsec_ followed by base64")


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """One ``v1,<signature>`` for one secret."""
    content = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_bytes(secret), content, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def signature_header(secrets: Iterable[str], msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value: one signature per secret, current secret first."""
    return " ".join(sign(secret, msg_id, timestamp, body) for secret in secrets)
