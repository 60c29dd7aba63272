"""pipeline.ops.auth: the ops page's login, session cookies, CSRF tokens and origin checks."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from http.cookies import SimpleCookie

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from pipeline.ops.auth import (
    CLOCK_SKEW_SECONDS,
    COOKIE_NAME,
    SESSION_SECONDS,
    cleared_cookie_header,
    cookie_header,
    csrf_token,
    csrf_valid,
    issue_session,
    login_allowed,
    same_origin,
    session_valid,
)

TOKEN = SecretStr("s3cret-token")
OTHER = SecretStr("another-token")
T0 = 1764331200.75
ISSUED = 1764331200
NONCE = "n0nce_-AbC"
#: Any text at all, lone surrogates (a header decoded with surrogateescape) included.
any_text = st.text(st.characters(codec=None)) | st.text(st.characters(categories=["Cs"]))
tokens = st.none() | st.builds(SecretStr, any_text)


def session(now: float = T0, token: SecretStr = TOKEN, nonce: str = NONCE) -> str:
    return issue_session(token, now, nonce)


def b64(digest: bytes) -> str:
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


# --- sessions -------------------------------------------------------------------------------------


def test_a_session_is_version_issued_time_nonce_and_a_url_safe_mac():
    cookie = session()

    version, issued, nonce, mac = cookie.split(".")
    assert (version, issued, nonce) == ("v1", "1764331200", NONCE)
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", mac)
    assert re.fullmatch(r"[A-Za-z0-9._-]+", cookie)


def test_the_mac_key_is_derived_from_the_token_not_the_token_itself():
    cookie = session()
    payload, _, mac = cookie.rpartition(".")
    key = hmac.new(b"s3cret-token", b"quota-pipeline ops session", hashlib.sha256).digest()

    assert mac == b64(hmac.new(key, payload.encode(), hashlib.sha256).digest())
    assert mac != b64(hmac.new(b"s3cret-token", payload.encode(), hashlib.sha256).digest())


def test_a_session_round_trips_on_any_worker_with_the_same_token():
    cookie = session()

    # Another worker: its own SecretStr of the same configured value.
    assert session_valid(cookie, SecretStr("s3cret-token"), T0)
    assert session_valid(cookie, TOKEN, T0 + 3600)


def test_sessions_are_deterministic_and_differ_by_nonce():
    assert session() == session()
    assert session(nonce="a") != session(nonce="b")


@pytest.mark.parametrize(
    ("offset", "valid"),
    [
        # From the issue time as the cookie has it: whole seconds, T0 rounded down.
        (0.75, True),
        (0, True),
        (SESSION_SECONDS - 0.01, True),
        (SESSION_SECONDS, False),
        (SESSION_SECONDS + 3600, False),
        # Issued by a worker whose clock is ahead of ours.
        (-CLOCK_SKEW_SECONDS, True),
        (-CLOCK_SKEW_SECONDS - 0.01, False),
        (-3600, False),
    ],
)
def test_a_session_lasts_twelve_hours_and_tolerates_a_minute_of_skew(offset, valid):
    assert session_valid(session(), TOKEN, ISSUED + offset) is valid


def test_another_token_rejects_the_session():
    assert not session_valid(session(), OTHER, T0)
    assert not session_valid(session(token=OTHER), TOKEN, T0)


def test_rotating_the_token_signs_every_session_out():
    cookie = session()

    assert not session_valid(cookie, SecretStr("s3cret-token-2"), T0)
    assert session_valid(
        session(token=SecretStr("s3cret-token-2")), SecretStr("s3cret-token-2"), T0
    )


@pytest.mark.parametrize("token", [None, SecretStr("")])
def test_without_a_token_no_session_is_valid(token):
    assert not session_valid(session(), token, T0)
    assert not session_valid("", token, T0)


def test_a_session_cannot_be_issued_without_a_token():
    with pytest.raises(ValueError, match="disabled"):
        issue_session(SecretStr(""), T0, NONCE)


@pytest.mark.parametrize("nonce", ["", "a.b", "a b", "é", "a=", "x" * 129, "a;b"])
def test_a_nonce_must_be_url_safe(nonce):
    with pytest.raises(ValueError, match="nonce"):
        issue_session(TOKEN, T0, nonce)


@pytest.mark.parametrize("now", [-1.0, float("nan"), float("inf"), 1e12])
def test_a_session_needs_a_plausible_issue_time(now):
    with pytest.raises(ValueError, match="time"):
        issue_session(TOKEN, now, NONCE)


def tampered(cookie: str, index: int, value: str) -> str:
    parts = cookie.split(".")
    parts[index] = value
    return ".".join(parts)


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda c: tampered(c, 0, "v2"), id="version"),
        pytest.param(lambda c: tampered(c, 1, str(int(T0) + 3600)), id="issued later"),
        pytest.param(lambda c: tampered(c, 1, "0" + c.split(".")[1]), id="issued zero-padded"),
        pytest.param(lambda c: tampered(c, 2, "other"), id="nonce"),
        pytest.param(lambda c: c[:-1] + ("A" if c[-1] != "A" else "B"), id="mac last character"),
        pytest.param(lambda c: tampered(c, 3, "A" * 43), id="mac"),
        pytest.param(lambda c: c[:-1], id="mac cut"),
        pytest.param(lambda c: c + "A", id="mac longer"),
        pytest.param(lambda c: c + "=", id="mac padded"),
        pytest.param(lambda c: c + ".x", id="extra field"),
        pytest.param(lambda c: c.rpartition(".")[0], id="no mac"),
        pytest.param(lambda c: " " + c, id="leading space"),
        pytest.param(lambda c: c + "\n", id="trailing newline"),
        pytest.param(lambda c: c.upper(), id="upper case"),
    ],
)
def test_any_change_to_a_session_rejects_it(change):
    cookie = session()
    assert session_valid(cookie, TOKEN, T0)

    assert not session_valid(change(cookie), TOKEN, T0)


@pytest.mark.parametrize(
    "cookie",
    [None, "", ".", "...", "v1...", "v1.1764331200..", "v1.١٧٦٤٣٣١٢٠٠.n." + "A" * 43, "é" * 300],
)
def test_garbage_is_not_a_session(cookie):
    assert not session_valid(cookie, TOKEN, T0)


@pytest.mark.parametrize("now", [float("nan"), float("inf"), float("-inf")])
def test_a_session_is_not_valid_at_a_time_that_is_no_time(now):
    assert not session_valid(session(), TOKEN, now)


@settings(max_examples=300)
@given(cookie=st.none() | any_text, token=tokens, now=st.floats())
def test_session_valid_never_raises(cookie, token, now):
    assert session_valid(cookie, token, now) in (True, False)


@settings(max_examples=200)
@given(nonce=st.from_regex(r"[A-Za-z0-9_-]{1,128}", fullmatch=True), now=st.floats(0, 4e9))
def test_every_issued_session_is_valid_when_issued(nonce, now):
    cookie = issue_session(TOKEN, now, nonce)

    assert session_valid(cookie, TOKEN, now)
    assert cookie_header(cookie, secure=True).startswith(f"{COOKIE_NAME}={cookie}; ")


# --- login --------------------------------------------------------------------------------------


@pytest.mark.parametrize("presented", ["s3cret-token", " s3cret-token\n"])
def test_the_configured_token_logs_in(presented):
    assert login_allowed(presented, TOKEN)


@pytest.mark.parametrize(
    "presented",
    [None, "", " ", "s3cret-token2", "S3CRET-TOKEN", "s3cret", "sécret-token", "\ud800"],
)
def test_anything_else_does_not_log_in(presented):
    assert not login_allowed(presented, TOKEN)


def test_a_non_ascii_token_logs_in_with_itself_only():
    token = SecretStr("jéton-🔑")

    assert login_allowed("jéton-🔑", token)
    assert not login_allowed("jeton-🔑", token)
    assert session_valid(issue_session(token, T0, NONCE), token, T0)


@pytest.mark.parametrize("token", [None, SecretStr("")])
@pytest.mark.parametrize("presented", [None, "", "anything"])
def test_without_a_token_nobody_logs_in(token, presented):
    assert not login_allowed(presented, token)


@settings(max_examples=300)
@given(presented=st.none() | any_text, token=tokens)
def test_login_allowed_never_raises(presented, token):
    assert login_allowed(presented, token) in (True, False)


# --- CSRF ---------------------------------------------------------------------------------------


def test_a_csrf_token_is_valid_for_its_session():
    cookie = session()
    csrf = csrf_token(cookie, TOKEN)

    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", csrf)
    assert csrf_valid(cookie, SecretStr("s3cret-token"), csrf)


def test_a_csrf_token_is_bound_to_its_session_and_token():
    cookie, other_session = session(nonce="one"), session(nonce="two")
    csrf = csrf_token(cookie, TOKEN)

    assert not csrf_valid(other_session, TOKEN, csrf)
    assert not csrf_valid(cookie, OTHER, csrf)
    assert csrf_token(cookie, OTHER) != csrf


def test_a_csrf_token_is_neither_the_session_mac_nor_under_the_session_key():
    cookie = session()
    csrf = csrf_token(cookie, TOKEN)
    session_key = hmac.new(b"s3cret-token", b"quota-pipeline ops session", hashlib.sha256)

    assert csrf != cookie.rpartition(".")[2]
    assert csrf != b64(hmac.new(session_key.digest(), cookie.encode(), hashlib.sha256).digest())


@pytest.mark.parametrize("presented", [None, "", "x", "\ud800", "é" * 43, "tampered"], ids=repr)
def test_a_missing_or_wrong_csrf_token_is_refused(presented):
    cookie = session()
    if presented == "tampered":
        presented = csrf_token(cookie, TOKEN)[:-1] + "A"

    assert not csrf_valid(cookie, TOKEN, presented)


@pytest.mark.parametrize("token", [None, SecretStr("")])
def test_without_a_token_no_csrf_token_is_valid(token):
    cookie = session()

    assert not csrf_valid(cookie, token, csrf_token(cookie, TOKEN))
    with pytest.raises(ValueError, match="disabled"):
        csrf_token(cookie, SecretStr(""))


@pytest.mark.parametrize("cookie", [None, ""])
def test_without_a_session_no_csrf_token_is_valid(cookie):
    assert not csrf_valid(cookie, TOKEN, csrf_token("", TOKEN))


@settings(max_examples=300)
@given(cookie=st.none() | any_text, token=tokens, presented=st.none() | any_text)
def test_csrf_valid_never_raises(cookie, token, presented):
    assert csrf_valid(cookie, token, presented) in (True, False)


# --- Set-Cookie -----------------------------------------------------------------------------------


def test_the_session_cookie_is_http_only_strict_and_scoped_to_the_ops_page():
    cookie = session()

    assert cookie_header(cookie, secure=False) == (
        f"qp_ops={cookie}; Path=/ops; HttpOnly; SameSite=Strict; Max-Age=43200"
    )
    assert cookie_header(cookie, secure=True) == (
        f"qp_ops={cookie}; Path=/ops; HttpOnly; SameSite=Strict; Max-Age=43200; Secure"
    )
    assert cookie_header(cookie, secure=False, max_age=60).endswith("; Max-Age=60")


@pytest.mark.parametrize("secure", [False, True])
def test_the_cleared_cookie_expires_at_once_with_the_same_scope(secure):
    header = cleared_cookie_header(secure)

    assert header == "qp_ops=; Path=/ops; HttpOnly; SameSite=Strict; Max-Age=0" + (
        "; Secure" if secure else ""
    )


def test_browsers_read_the_header_as_one_cookie_with_those_attributes():
    parsed = SimpleCookie()
    parsed.load(cookie_header(session(), secure=True))
    morsel = parsed[COOKIE_NAME]

    assert morsel.value == session()
    assert (morsel["path"], morsel["max-age"], morsel["samesite"]) == ("/ops", "43200", "Strict")
    assert morsel["httponly"] is True
    assert morsel["secure"] is True


@pytest.mark.parametrize("value", ["a b", "a;b", 'a"b', "a,b", "a\r\nSet-Cookie: x=1", "é"])
def test_a_value_that_would_need_quoting_is_refused(value):
    with pytest.raises(ValueError, match="cookie value"):
        cookie_header(value, secure=True)


def test_max_age_is_never_negative():
    with pytest.raises(ValueError, match="Max-Age"):
        cookie_header(session(), secure=True, max_age=-1)


# --- same origin --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("origin", "referer", "host"),
    [
        ("https://ops.example.com", None, "ops.example.com"),
        ("http://ops.example.com", None, "ops.example.com"),
        ("https://OPS.example.com", None, "ops.EXAMPLE.com"),
        ("http://127.0.0.1:8080", None, "127.0.0.1:8080"),
        ("http://[::1]:8080", None, "[::1]:8080"),
        # A balancer ending TLS passes the Host with or without the default port.
        ("https://ops.example.com", None, "ops.example.com:443"),
        ("http://ops.example.com:80", None, "ops.example.com"),
        # Origin wins over a Referer that says otherwise.
        ("https://ops.example.com", "https://evil.example/", "ops.example.com"),
        (None, "https://ops.example.com/ops/dlq?page=2", "ops.example.com"),
        ("", "http://localhost:8080/ops", "localhost:8080"),
        (None, None, "ops.example.com"),
        (None, None, None),
        ("", "", None),
    ],
)
def test_a_post_from_a_page_of_this_host_is_same_origin(origin, referer, host):
    assert same_origin(origin, referer, host)


@pytest.mark.parametrize(
    ("origin", "referer", "host"),
    [
        ("https://evil.example", None, "ops.example.com"),
        ("https://ops.example.com.evil.example", None, "ops.example.com"),
        ("https://ops.example.com:8443", None, "ops.example.com"),
        ("http://localhost:8081", None, "localhost:8080"),
        ("null", None, "ops.example.com"),
        ("null", "https://ops.example.com/ops", "ops.example.com"),
        ("https://ops.example.com/ops", None, "ops.example.com"),
        ("https://user@ops.example.com", None, "ops.example.com"),
        ("ftp://ops.example.com", None, "ops.example.com"),
        ("https://ops.example.com:99999", None, "ops.example.com"),
        ("https://ops.example.com:x", None, "ops.example.com"),
        ("https://[::1", None, "[::1]"),
        ("https://ops.example.com", None, None),
        ("https://ops.example.com", None, ""),
        ("https://ops.example.com", None, "evil@ops.example.com"),
        ("https://ops.example.com", None, "ops.example.com/path"),
        (None, "https://evil.example/ops", "ops.example.com"),
        (None, "/ops/dlq", "ops.example.com"),
        (None, "garbage", "ops.example.com"),
        (None, "https://ops.example.com/ops", None),
    ],
)
def test_anything_else_is_not(origin, referer, host):
    assert not same_origin(origin, referer, host)


@settings(max_examples=300)
@given(origin=st.none() | any_text, referer=st.none() | any_text, host=st.none() | any_text)
def test_same_origin_never_raises(origin, referer, host):
    assert same_origin(origin, referer, host) in (True, False)
