"""SES with no keys configured: botocore's credential chain, looked up and refreshed off the
event loop, against local peers (SES recomputing the SigV4 signature, STS answering web
identity). Every test runs with the developer's AWS_* variables and ~/.aws files hidden."""

from __future__ import annotations

import asyncio
import logging
import re
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from botocore.credentials import RefreshableCredentials
from multidict import CIMultiDict

from pipeline.devtools.receiver import ReceivedWebhook, WebhookReceiver
from pipeline.email.aws import RETRY_INTERVAL, AwsCredentials
from pipeline.email.ses import SesSink
from pipeline.errors import RetriableDeliveryError
from tests.functional.email.email_peers import SesPeer, StsPeer, isolate_aws_environment
from tests.functional.email.test_email_http_providers import REQUEST

REGION = "eu-west-1"
ROLE_ARN = "arn:aws:iam::123456789012:role/quota-pipeline-ses"

StartSink = Callable[[SesSink], Awaitable[SesSink]]


@pytest.fixture(autouse=True)
def no_real_aws(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    isolate_aws_environment(monkeypatch, tmp_path)


@pytest.fixture
async def ses() -> AsyncIterator[WebhookReceiver]:
    async with WebhookReceiver() as started:
        yield started


@pytest.fixture
async def sts() -> AsyncIterator[WebhookReceiver]:
    async with WebhookReceiver() as started:
        yield started


@pytest.fixture
async def start_sink() -> AsyncIterator[StartSink]:
    sinks: list[SesSink] = []

    async def start(sink: SesSink) -> SesSink:
        sinks.append(sink)
        await sink.start()
        return sink

    yield start
    for sink in sinks:
        await sink.stop()


def chain_sink(ses: WebhookReceiver, **options: Any) -> SesSink:
    """A sink as the factory builds it with no keys configured (``options`` for the clock)."""
    credentials = AwsCredentials.chain(name="amazonses", **options) if options else None
    return SesSink(region=REGION, credentials=credentials, base_url=ses.url, timeout=5)


def key_of(call: ReceivedWebhook) -> str:
    match = re.search(r"Credential=([^/]+)/", call.headers["Authorization"])
    assert match is not None
    return match.group(1)


def signed_headers(call: ReceivedWebhook) -> list[str]:
    match = re.search(r"SignedHeaders=([^,]+)", call.headers["Authorization"])
    assert match is not None
    return match.group(1).split(";")


def token_of(call: ReceivedWebhook) -> str | None:
    return CIMultiDict(call.headers).get("X-Amz-Security-Token")


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# --- Where the chain finds credentials -----------------------------------------------------


async def test_environment_keys_sign_with_their_session_token(
    ses: WebhookReceiver, start_sink: StartSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "ASIAENVEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "env-secret")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "env-session-token")
    peer = SesPeer(REGION, "ASIAENVEXAMPLE", "env-secret", "env-session-token")
    ses.responder = peer
    sink = await start_sink(chain_sink(ses))

    await sink.send(REQUEST)

    [call] = peer.calls  # the peer admits only its own signature and the right token
    assert key_of(call) == "ASIAENVEXAMPLE"
    assert token_of(call) == "env-session-token"
    assert "x-amz-security-token" in signed_headers(call)


async def test_configured_keys_win_over_the_chain(
    ses: WebhookReceiver, start_sink: StartSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "ASIAENVEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "env-secret")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "env-session-token")
    peer = SesPeer(REGION, "AKIDCONFIGURED", "configured-secret")
    ses.responder = peer
    sink = await start_sink(
        SesSink(
            region=REGION,
            access_key_id="AKIDCONFIGURED",
            secret_access_key="configured-secret",
            base_url=ses.url,
            timeout=5,
        )
    )

    await sink.send(REQUEST)

    [call] = peer.calls
    assert (key_of(call), token_of(call)) == ("AKIDCONFIGURED", None)


@pytest.mark.parametrize(
    ("variable", "section"),
    [("AWS_SHARED_CREDENTIALS_FILE", "[quota]"), ("AWS_CONFIG_FILE", "[profile quota]")],
)
async def test_a_profile_of_the_shared_files_signs(
    ses: WebhookReceiver,
    start_sink: StartSink,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    variable: str,
    section: str,
) -> None:
    shared = tmp_path / "aws-file"
    shared.write_text(
        "[default]\n"
        "aws_access_key_id = AKIADEFAULTEXAMPLE\n"
        "aws_secret_access_key = default-secret\n\n"
        f"{section}\n"
        "aws_access_key_id = AKIAPROFILEEXAMPLE\n"
        "aws_secret_access_key = profile-secret\n"
    )
    monkeypatch.setenv(variable, str(shared))
    monkeypatch.setenv("AWS_PROFILE", "quota")
    peer = SesPeer(REGION, "AKIAPROFILEEXAMPLE", "profile-secret")
    ses.responder = peer
    sink = await start_sink(chain_sink(ses))

    await sink.send(REQUEST)

    [call] = peer.calls
    assert (key_of(call), token_of(call)) == ("AKIAPROFILEEXAMPLE", None)


def web_identity(sts: WebhookReceiver, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> StsPeer:
    """What an EKS pod with an IAM role for its service account has (the token file the
    kubelet projects, the role), plus AWS_ENDPOINT_URL_STS pointing botocore at the local STS."""
    token_file = tmp_path / "eks.amazonaws.com" / "serviceaccount" / "token"
    token_file.parent.mkdir(parents=True)
    token_file.write_text("eyJhbGciOiJSUzI1NiJ9.service-account-token.signature")
    monkeypatch.setenv("AWS_WEB_IDENTITY_TOKEN_FILE", str(token_file))
    monkeypatch.setenv("AWS_ROLE_ARN", ROLE_ARN)
    monkeypatch.setenv("AWS_ROLE_SESSION_NAME", "quota-pipeline")
    monkeypatch.setenv("AWS_ENDPOINT_URL_STS", sts.url)
    peer = StsPeer(
        role_arn=ROLE_ARN,
        token="eyJhbGciOiJSUzI1NiJ9.service-account-token.signature",
        access_key_id="ASIASTSEXAMPLE",
        secret_access_key="sts-secret",
        session_token="sts-session-token",
        expiration=datetime.now(UTC) + timedelta(hours=1),
    )
    sts.responder = peer
    return peer


async def test_web_identity_signs_with_the_keys_sts_issued(
    ses: WebhookReceiver,
    sts: WebhookReceiver,
    start_sink: StartSink,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    sts_peer = web_identity(sts, monkeypatch, tmp_path)
    ses_peer = SesPeer(REGION, "ASIASTSEXAMPLE", "sts-secret", "sts-session-token")
    ses.responder = ses_peer

    # botocore calls STS synchronously: an answer from a server on this very event loop shows
    # the call ran in another thread (on the loop it would wait for itself, and time out).
    sink = await start_sink(chain_sink(ses))
    await sink.send(REQUEST)
    await sink.send(REQUEST)

    [assumed] = sts_peer.calls  # an hour's credentials: the second email needs no new ones
    form = StsPeer.form(assumed)
    assert form["WebIdentityToken"] == "eyJhbGciOiJSUzI1NiJ9.service-account-token.signature"
    assert (form["RoleArn"], form["RoleSessionName"]) == (ROLE_ARN, "quota-pipeline")
    assert [(key_of(call), token_of(call)) for call in ses_peer.calls] == [
        ("ASIASTSEXAMPLE", "sts-session-token")
    ] * 2


async def test_sts_refusing_the_role_fails_sends_retriably_without_crashing(
    ses: WebhookReceiver,
    sts: WebhookReceiver,
    start_sink: StartSink,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    sts_peer = web_identity(sts, monkeypatch, tmp_path)
    sts_peer.role_arn = "arn:aws:iam::123456789012:role/another-role"

    with caplog.at_level(logging.ERROR, logger="pipeline.email.aws"):
        sink = await start_sink(chain_sink(ses))
    with pytest.raises(RetriableDeliveryError, match="AccessDenied") as caught:
        await sink.send(REQUEST)

    [logged] = [record for record in caplog.records if record.name == "pipeline.email.aws"]
    assert "no AWS credentials found (ClientError" in logged.getMessage()
    assert "Not authorized to perform sts:AssumeRoleWithWebIdentity" in str(caught.value)
    assert "service-account-token" not in caplog.text + str(caught.value)
    assert ses.received == []


# --- No credentials anywhere ---------------------------------------------------------------


async def test_no_credentials_logs_one_error_and_sends_fail_retriably(
    ses: WebhookReceiver, start_sink: StartSink, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="pipeline.email.aws"):
        sink = await start_sink(chain_sink(ses))
        for _ in range(3):
            with pytest.raises(RetriableDeliveryError, match="no AWS credentials found") as caught:
                await sink.send(REQUEST)

    [logged] = [record for record in caplog.records if record.name == "pipeline.email.aws"]
    assert logged.levelno == logging.ERROR
    message = logged.getMessage()
    assert message.startswith("amazonses: no AWS credentials found;")
    for where in ("AWS_ACCESS_KEY_ID", "AWS_PROFILE", "AWS_WEB_IDENTITY_TOKEN_FILE", "metadata"):
        assert where in message
    assert "\n" not in message
    assert str(caught.value) == message
    assert ses.received == []


async def test_credentials_that_appear_later_are_found_at_most_every_30_seconds(
    ses: WebhookReceiver,
    start_sink: StartSink,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    sink = await start_sink(chain_sink(ses, clock=clock))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIALATEEXAMPLE")  # e.g. metadata now reachable
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "late-secret")
    peer = SesPeer(REGION, "AKIALATEEXAMPLE", "late-secret")
    ses.responder = peer

    clock.now += RETRY_INTERVAL - 1
    with pytest.raises(RetriableDeliveryError, match="no AWS credentials found"):
        await sink.send(REQUEST)  # too soon to ask the chain again: it would have found them

    clock.now += 1
    with caplog.at_level(logging.INFO, logger="pipeline.email.aws"):
        await sink.send(REQUEST)

    assert [key_of(call) for call in peer.calls] == ["AKIALATEEXAMPLE"]
    assert "AWS credentials found source=env" in caplog.text


async def test_a_missing_profile_is_no_credentials_with_botocores_reason(
    ses: WebhookReceiver,
    start_sink: StartSink,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("AWS_PROFILE", "nowhere")

    with caplog.at_level(logging.ERROR, logger="pipeline.email.aws"):
        sink = await start_sink(chain_sink(ses))
    with pytest.raises(RetriableDeliveryError, match=r"ProfileNotFound.*nowhere"):
        await sink.send(REQUEST)

    assert "no AWS credentials found (ProfileNotFound" in caplog.text


# --- Refreshing temporary credentials ------------------------------------------------------

START = datetime(2030, 1, 1, 12, tzinfo=UTC)


class Refresh:
    """botocore's refresh_using: counts its calls and the threads they ran in; ``gate`` holds
    it until the test opens it, ``fail`` makes it raise."""

    def __init__(self, wall: list[datetime]) -> None:
        self.wall = wall
        self.threads: list[int] = []
        self.gate = threading.Event()
        self.gate.set()
        self.fail = False

    def __call__(self) -> dict[str, str]:
        self.threads.append(threading.get_ident())
        assert self.gate.wait(timeout=30)
        if self.fail:
            raise ConnectionError("STS unreachable")
        return {
            "access_key": "ASIANEWEXAMPLE",
            "secret_key": "new-secret",
            "token": "new-session-token",
            "expiry_time": (self.wall[0] + timedelta(hours=1)).isoformat(),
        }


def temporary(wall: list[datetime], refresh: Refresh) -> RefreshableCredentials:
    """Credentials good for an hour from START, on the wall clock ``wall[0]`` the test moves."""
    return RefreshableCredentials(
        "ASIAOLDEXAMPLE",
        "old-secret",
        "old-session-token",
        START + timedelta(hours=1),
        refresh_using=refresh,
        method="test",
        time_fetcher=lambda: wall[0],
    )


def old_keys() -> SesPeer:
    return SesPeer(REGION, "ASIAOLDEXAMPLE", "old-secret", "old-session-token")


def new_keys() -> SesPeer:
    return SesPeer(REGION, "ASIANEWEXAMPLE", "new-secret", "new-session-token")


async def refreshing_sink(
    ses: WebhookReceiver, start_sink: StartSink, clock: Clock | None = None
) -> tuple[SesSink, AwsCredentials, Refresh, list[datetime]]:
    wall = [START]
    refresh = Refresh(wall)
    credentials = AwsCredentials.fixed(
        temporary(wall, refresh), name="amazonses", clock=clock or Clock()
    )
    sink = await start_sink(
        SesSink(region=REGION, credentials=credentials, base_url=ses.url, timeout=5)
    )
    assert refresh.threads == []  # an hour left at start: nothing to refresh yet
    return sink, credentials, refresh, wall


async def test_credentials_about_to_expire_are_refreshed_in_a_thread_before_signing(
    ses: WebhookReceiver, start_sink: StartSink
) -> None:
    sink, _, refresh, wall = await refreshing_sink(ses, start_sink)
    ses.responder = peer = new_keys()
    wall[0] = START + timedelta(minutes=59, seconds=30)  # 30 s left: too close to sign with

    await asyncio.gather(*(sink.send(REQUEST) for _ in range(20)))

    assert len(refresh.threads) == 1  # one refresh for all twenty sends
    assert refresh.threads[0] != threading.get_ident()  # not on the event loop's thread
    assert {(key_of(call), token_of(call)) for call in peer.calls} == {
        ("ASIANEWEXAMPLE", "new-session-token")
    }
    assert len(peer.calls) == 20


async def test_credentials_in_the_refresh_window_keep_signing_while_a_thread_refreshes(
    ses: WebhookReceiver, start_sink: StartSink
) -> None:
    sink, credentials, refresh, wall = await refreshing_sink(ses, start_sink)
    wall[0] = START + timedelta(minutes=48)  # 12 minutes left: botocore advises a refresh
    refresh.gate.clear()
    ses.responder = old = old_keys()

    # Signed at once with the keys still good for 12 minutes: the refresh waits on the gate.
    await sink.send(REQUEST)

    assert key_of(old.calls[-1]) == "ASIAOLDEXAMPLE"
    refresh.gate.set()
    await credentials.renewal()
    ses.responder = new = new_keys()
    await sink.send(REQUEST)

    assert key_of(new.calls[-1]) == "ASIANEWEXAMPLE"
    assert len(refresh.threads) == 1
    assert refresh.threads[0] != threading.get_ident()


async def test_a_failing_refresh_is_retried_every_30_seconds_and_expiry_fails_retriably(
    ses: WebhookReceiver, start_sink: StartSink, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    sink, credentials, refresh, wall = await refreshing_sink(ses, start_sink, clock)
    refresh.fail = True
    ses.responder = old = old_keys()

    # In the advisory window botocore keeps the current keys when a refresh fails.
    wall[0] = START + timedelta(minutes=48)
    await sink.send(REQUEST)
    await credentials.renewal()
    await sink.send(REQUEST)
    assert len(refresh.threads) == 1  # no second try within 30 s, however many sends
    clock.now += RETRY_INTERVAL
    await sink.send(REQUEST)
    await credentials.renewal()
    assert len(refresh.threads) == 2
    assert [key_of(call) for call in old.calls] == ["ASIAOLDEXAMPLE"] * 3

    # Too close to expiry, a failed refresh fails the send, retriably; the worker goes on.
    wall[0] = START + timedelta(minutes=59, seconds=30)
    clock.now += RETRY_INTERVAL
    with caplog.at_level(logging.WARNING, logger="pipeline.email.aws"):
        with pytest.raises(RetriableDeliveryError, match="could not be refreshed: Connection"):
            await sink.send(REQUEST)
        with pytest.raises(RetriableDeliveryError, match="could not be refreshed"):
            await sink.send(REQUEST)  # within 30 s of that failure: no new try
    assert len(refresh.threads) == 3
    assert "AWS credentials could not be refreshed" in caplog.text

    refresh.fail = False
    clock.now += RETRY_INTERVAL
    ses.responder = new = new_keys()
    await sink.send(REQUEST)
    assert [key_of(call) for call in new.calls] == ["ASIANEWEXAMPLE"]
    assert len(refresh.threads) == 4
