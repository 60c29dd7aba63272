"""Who may use the ops page (pure): the login, the session cookie, CSRF tokens, same origin.

Any worker of the group may answer any request, so a session must be checkable by every worker
that has the same ``web.token``, with no state shared but that token: the cookie carries its
version, issue time and a nonce, and an HMAC-SHA256 over them keyed by a key derived from the
token. Changing the token signs every session out. CSRF tokens are an HMAC of the cookie under
another derived key, so they are bound to one session and need no storage either.

Nothing here reads a clock or does I/O: the caller passes ``now`` and the nonce
(``secrets.token_urlsafe``). Checks never raise on what a client sends: anything malformed is
refused.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import re
from urllib.parse import urlsplit

from pydantic import SecretStr

COOKIE_NAME = "qp_ops"
COOKIE_PATH = "/ops"
SESSION_SECONDS = 12 * 3600
#: Workers' clocks differ: a session issued by a worker whose clock is up to this far ahead of
#: ours is valid from the start.
CLOCK_SKEW_SECONDS = 60
#: The hidden form field that carries the CSRF token.
CSRF_FIELD = "csrf"
VERSION = "v1"
#: No cookie we issue is longer; a longer one is refused before any HMAC is computed.
MAX_COOKIE_CHARS = 256

# One key per purpose, each derived from the token: the raw token is the API's bearer secret,
# and a MAC under it must never be usable as anything else.
_SESSION_CONTEXT = b"quota-pipeline ops session"
_CSRF_CONTEXT = b"quota-pipeline ops csrf"

_NONCE = re.compile(r"[A-Za-z0-9_-]{1,128}")
#: version.issued.nonce.mac: URL-safe base64 and dots only, safe in a cookie unquoted.
_SESSION = re.compile(r"v1\.([0-9]{1,12})\.[A-Za-z0-9_-]{1,128}\.[A-Za-z0-9_-]{43}")
_COOKIE_VALUE = re.compile(r"[A-Za-z0-9._-]*")
_MAX_ISSUED = 10**12
#: Ports that stand for "the scheme's default" (see same_origin).
_DEFAULT_PORTS = (80, 443)

Authority = tuple[str, int | None]


def _bytes(text: str) -> bytes:
    # surrogatepass: a header decoded with surrogateescape must not raise, and the encoding stays
    # one-to-one, so distinct strings never compare equal.
    return text.encode("utf-8", "surrogatepass")


def _secret(token: SecretStr | None) -> bytes:
    """The configured token's bytes; empty when there is none (the ops page is disabled)."""
    return _bytes(token.get_secret_value()) if token is not None else b""


def _key(secret: bytes, context: bytes) -> bytes:
    return hmac.new(secret, context, hashlib.sha256).digest()


def _mac(key: bytes, message: bytes) -> str:
    digest = hmac.new(key, message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def _required_secret(token: SecretStr) -> bytes:
    secret = _secret(token)
    if not secret:
        raise ValueError("the ops page is disabled: set web.token (QP_WEB_TOKEN)")
    return secret


# --- login and sessions ------------------------------------------------------------------------


def login_allowed(presented: str | None, token: SecretStr | None) -> bool:
    """True when the login form's ``token`` is the configured token."""
    expected = _secret(token)
    if not expected or presented is None:
        # An empty token would admit an empty form from anyone: treat it as no token at all.
        return False
    # Bytes, not str: compare_digest refuses non-ASCII str, and a client may send anything.
    return hmac.compare_digest(_bytes(presented.strip()), expected)


def issue_session(token: SecretStr, now: float, nonce: str) -> str:
    """A session cookie's value, issued at ``now``: ``v1.<issued>.<nonce>.<mac>``.

    ValueError when there is no token, or for a nonce that is not 1 to 128 URL-safe characters.
    """
    secret = _required_secret(token)
    if _NONCE.fullmatch(nonce) is None:
        raise ValueError("a session nonce is 1 to 128 URL-safe characters")
    if not (math.isfinite(now) and 0 <= now < _MAX_ISSUED):
        raise ValueError(f"not a time to issue a session at: {now!r}")
    payload = f"{VERSION}.{int(now)}.{nonce}"
    return f"{payload}.{_mac(_key(secret, _SESSION_CONTEXT), payload.encode())}"


def session_valid(cookie: str | None, token: SecretStr | None, now: float) -> bool:
    """True when ``cookie`` is a session issued under the same token and not expired at ``now``."""
    secret = _secret(token)
    if not secret or cookie is None or len(cookie) > MAX_COOKIE_CHARS:
        return False
    match = _SESSION.fullmatch(cookie)
    if match is None:
        return False
    payload, _, presented = cookie.rpartition(".")
    expected = _mac(_key(secret, _SESSION_CONTEXT), payload.encode())
    if not hmac.compare_digest(presented.encode(), expected.encode()):
        return False
    issued = int(match[1])
    # Written so that a NaN ``now`` fails both comparisons.
    return issued - CLOCK_SKEW_SECONDS <= now < issued + SESSION_SECONDS


# --- CSRF -----------------------------------------------------------------------------------------


def csrf_token(cookie: str, token: SecretStr) -> str:
    """The CSRF token of the session ``cookie``: the hidden ``csrf`` field of every form that
    changes something. ValueError when there is no token."""
    return _mac(_key(_required_secret(token), _CSRF_CONTEXT), _bytes(cookie))


def csrf_valid(cookie: str | None, token: SecretStr | None, presented: str | None) -> bool:
    """True when ``presented`` is the CSRF token of ``cookie``.

    It says nothing of the session itself: check :func:`session_valid` first.
    """
    if token is None or not _secret(token) or presented is None:
        return False
    if not cookie or len(cookie) > MAX_COOKIE_CHARS:
        return False
    return hmac.compare_digest(_bytes(presented), csrf_token(cookie, token).encode())


# --- the Set-Cookie header --------------------------------------------------------------------


def cookie_header(value: str, *, secure: bool, max_age: int = SESSION_SECONDS) -> str:
    """The ``Set-Cookie`` header value for the session cookie ``value``.

    HttpOnly: no script reads it. SameSite=Strict: no other site's page or form sends it.
    Path=/ops: the HTTP API's paths never see it. Secure only when the page is served over
    HTTPS as the browser sees it (a browser drops a Secure cookie set over plain HTTP).
    """
    if _COOKIE_VALUE.fullmatch(value) is None:
        # Only what issue_session makes: nothing that would need quoting or end the header.
        raise ValueError("a session cookie value is URL-safe base64 and dots only")
    if max_age < 0:
        raise ValueError(f"Max-Age is never negative: {max_age}")
    attributes = [
        f"{COOKIE_NAME}={value}",
        f"Path={COOKIE_PATH}",
        "HttpOnly",
        "SameSite=Strict",
        f"Max-Age={max_age}",
    ]
    if secure:
        attributes.append("Secure")
    return "; ".join(attributes)


def cleared_cookie_header(secure: bool) -> str:
    """The ``Set-Cookie`` header value that signs out: the cookie emptied and expired now."""
    return cookie_header("", secure=secure, max_age=0)


# --- same origin --------------------------------------------------------------------------------


def _normal(hostname: str, port: int | None) -> Authority:
    # Scheme-agnostic: behind a balancer that ends TLS a worker cannot know the scheme the
    # browser used, so a default port of either scheme is the same as none.
    return hostname.lower(), None if port in _DEFAULT_PORTS else port


def _url_authority(url: str, *, bare: bool) -> Authority | None:
    """(host, port) of an http(s) URL; None when it is not one. ``bare``: an origin (no path)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname or "@" in parts.netloc:
        return None
    if bare and (parts.path or parts.query or parts.fragment):
        return None
    return _normal(parts.hostname, port)


def _host_authority(host: str) -> Authority | None:
    """(host, port) of a ``Host`` header; None when it is not a bare host[:port]."""
    if not host or any(c in host for c in "/?#@\\") or any(c.isspace() for c in host):
        return None
    try:
        parts = urlsplit(f"//{host}")
        port = parts.port
    except ValueError:
        return None
    return _normal(parts.hostname, port) if parts.hostname else None


def same_origin(origin: str | None, referer: str | None, host: str | None) -> bool:
    """Defence in depth for a POST: was the form on a page of this host?

    The ``Origin`` header, when sent, must name the ``Host``; without one the ``Referer``'s
    host is compared instead. With neither (privacy settings drop both) it is True: SameSite
    and the CSRF token still protect. ``null`` (an opaque origin) and anything malformed are
    False. An empty header counts as absent.
    """
    if origin:
        claimed = _url_authority(origin, bare=True)
    elif referer:
        claimed = _url_authority(referer, bare=False)
    else:
        return True
    return claimed is not None and host is not None and claimed == _host_authority(host)
