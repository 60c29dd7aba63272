"""AWS credentials for signing SES requests: the configured keys, or botocore's standard chain.

The chain (environment, shared credentials/config files and AWS_PROFILE, web identity,
container credentials, instance metadata) may call STS or the metadata service, and so may
refreshing the temporary credentials it finds. Both happen in a worker thread
(:func:`asyncio.to_thread`), one at a time, so the event loop never waits on them; a send only
reads the frozen credentials kept here, which costs a clock comparison.

With no credentials, sends fail retriably (the retry tiers and the dead-letter topic keep the
emails) and the chain is tried again, at most once every :data:`RETRY_INTERVAL` seconds.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from typing import Any

import botocore.session
from botocore.credentials import Credentials, ReadOnlyCredentials, RefreshableCredentials

from pipeline.email.http_provider import excerpt
from pipeline.errors import RetriableDeliveryError

logger = logging.getLogger(__name__)

#: Seconds between two look-ups or refreshes that left no fresh credentials: soon enough to
#: notice the metadata service or STS coming back, rare enough not to hammer them at the
#: hundreds of sends a second that each would otherwise trigger one.
RETRY_INTERVAL = 30.0
#: Temporary credentials this close to expiry are not signed with: the request could reach AWS
#: after they expired (a slow send, clock skew), which SES answers with a permanent 403.
SIGNING_MARGIN = 60.0

WHERE_BOTOCORE_LOOKS = (
    "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY; AWS_PROFILE (or default) in the shared "
    "credentials and config files (AWS_SHARED_CREDENTIALS_FILE, AWS_CONFIG_FILE); "
    "AWS_WEB_IDENTITY_TOKEN_FILE with AWS_ROLE_ARN; container credentials "
    "(AWS_CONTAINER_CREDENTIALS_FULL_URI or _RELATIVE_URI); the EC2 instance metadata service"
)

#: Returns the credentials to sign with, None when there are none; may block (runs in a thread).
Resolve = Callable[[], Credentials | None]


def default_chain() -> Credentials | None:
    """botocore's standard credential chain, read afresh: a new session sees the environment
    and the files as they are now, so a later retry finds credentials that appeared since."""
    return botocore.session.get_session().get_credentials()


def _look_up(resolve: Resolve) -> tuple[Credentials, ReadOnlyCredentials] | None:
    """Runs in a worker thread: the chain may read files and call the metadata service."""
    credentials = resolve()
    if credentials is None:
        return None
    # Web identity (and SSO) credentials are deferred: STS is called on the first read, here.
    return credentials, credentials.get_frozen_credentials()


def _reason(exc: Exception) -> str:
    # botocore's messages name settings and operations, never key material.
    return excerpt(f"{type(exc).__name__}: {exc}")


class AwsCredentials:
    """The frozen credentials a send signs with, found and kept fresh off the event loop.

    ``name`` prefixes every message (the backend code). ``clock`` (monotonic seconds) times
    the retries; tests pass their own.
    """

    def __init__(
        self,
        resolve: Resolve,
        *,
        name: str,
        retry_interval: float = RETRY_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._resolve = resolve
        self._name = name
        self._retry_interval = retry_interval
        self._clock = clock
        self._credentials: Any = None  # botocore Credentials, once found
        self._frozen: ReadOnlyCredentials | None = None  # None: nothing fit to sign with
        self._problem = self._not_found()
        self._next_attempt = -math.inf
        self._pending: asyncio.Task[None] | None = None

    @classmethod
    def fixed(cls, credentials: Credentials, *, name: str, **options: Any) -> AwsCredentials:
        """Credentials given outright: the configured keys, or a RefreshableCredentials."""
        source = cls(lambda: credentials, name=name, **options)
        if not isinstance(credentials, RefreshableCredentials):
            # Plain keys freeze without I/O: usable before start(), never refreshed.
            source._credentials = credentials
            source._frozen = credentials.get_frozen_credentials()
        return source

    @classmethod
    def chain(cls, *, name: str, **options: Any) -> AwsCredentials:
        """botocore's standard credential chain."""
        return cls(default_chain, name=name, **options)

    async def start(self) -> None:
        """Looks the credentials up; one ERROR line (no secrets) when there are none."""
        if self._frozen is None:
            if self._pending is None:
                self._pending = asyncio.create_task(self._renew())
            await self.renewal()
            if self._frozen is None:
                logger.error("%s", self._problem)

    async def stop(self) -> None:
        """Stops waiting for a look-up under way; its thread ends on its own."""
        if self._pending is not None:
            self._pending.cancel()

    async def renewal(self) -> None:
        """Waits for the look-up or refresh under way, if there is one."""
        if self._pending is not None:
            # Shielded: a send that times out must not cancel the look-up others wait for.
            await asyncio.shield(self._pending)

    @property
    def latest(self) -> ReadOnlyCredentials:
        """What :meth:`current` last made sure of; RetriableDeliveryError when nothing."""
        if self._frozen is None:
            raise RetriableDeliveryError(self._problem)
        return self._frozen

    async def current(self) -> ReadOnlyCredentials:
        """Credentials to sign one request with now; RetriableDeliveryError when there are none.

        Expiring credentials are refreshed behind the sends while they remain good for
        :data:`SIGNING_MARGIN`; closer to expiry (or with none at all) the send waits.
        """
        frozen = self._frozen
        if frozen is not None and not self._expiring(None):
            return frozen  # almost every send: no I/O, no task
        if self._pending is None and self._clock() >= self._next_attempt:
            self._pending = asyncio.create_task(self._renew())
        if frozen is not None and not self._expiring(SIGNING_MARGIN):
            return frozen
        # Not fit to sign with any more: nor for a send that arrives before the refresh lands.
        self._frozen = None
        await self.renewal()
        return self.latest

    def _expiring(self, within: float | None) -> bool:
        """Whether temporary credentials expire within ``within`` seconds (None: botocore's
        advisory window, 15 minutes); plain keys never do."""
        credentials = self._credentials
        return isinstance(credentials, RefreshableCredentials) and bool(
            credentials.refresh_needed(within)
        )

    async def _renew(self) -> None:
        try:
            if self._credentials is None:
                await self._find()
            else:
                await self._refresh()
        finally:
            # Left without fresh credentials (none, a failed refresh, or short-lived ones
            # still in the refresh window): sends keep signing as they can, but do not ask
            # again before the interval. Fresh ones may be refreshed as soon as they need it.
            stale = self._frozen is None or self._expiring(None)
            self._next_attempt = self._clock() + self._retry_interval if stale else -math.inf
            self._pending = None

    async def _find(self) -> None:
        try:
            found = await asyncio.to_thread(_look_up, self._resolve)
        except Exception as exc:
            # The chain raises for a missing profile, a refused web identity token, an STS or
            # credential_process failure...: the worker keeps running and tries again later.
            self._problem = self._not_found(_reason(exc))
            return
        if found is None:
            self._problem = self._not_found()
            return
        self._credentials, self._frozen = found
        # The method ("env", "assume-role-with-web-identity", "iam-role"...), never a key.
        logger.info("AWS credentials found source=%s", getattr(found[0], "method", "unknown"))

    async def _refresh(self) -> None:
        credentials = self._credentials
        try:
            # botocore refreshes here when due: in its advisory window a failure only logs and
            # keeps the current keys; in its mandatory window (or expired) it raises.
            frozen = await asyncio.to_thread(credentials.get_frozen_credentials)
        except Exception as exc:  # the refresh may be any provider's code
            self._problem = f"{self._name}: AWS credentials could not be refreshed: {_reason(exc)}"
            logger.warning("%s", self._problem)
            return
        self._frozen = frozen

    def _not_found(self, reason: str = "") -> str:
        because = f" ({reason})" if reason else ""
        return (
            f"{self._name}: no AWS credentials found{because}; none are configured and "
            f"botocore looked in: {WHERE_BOTOCORE_LOOKS}"
        )
