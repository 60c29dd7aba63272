"""A client of Tyk Gateway's REST API for key and org sessions (as TykTechnologies/tyk serves
it: ``gateway/api.go`` and ``gateway/server.go``).

- ``GET /tyk/keys`` lists every key as ``{"keys": [...]}``; with ``hash_keys`` on, the
  hashes, and only with ``enable_hashed_keys_listing`` (else a 404 that says so).
- ``GET /tyk/keys/{key}`` is a key's session object (policies applied); ``?hashed=true`` when
  ``{key}`` is a hash; 404 ``Key not found`` when the key is gone.
- ``GET /tyk/org/keys`` lists org ids (404 when there are none, or in RPC mode, where the org
  routes do not exist); ``GET /tyk/org/keys/{org_id}`` is an org's session (404 ``Org not
  found``).
- Every request carries ``x-tyk-authorization: <secret>``; a wrong one is a 403.

Sessions are fetched by at most ``tyk.concurrency`` tasks over one keep-alive pool of as many
connections, so a million keys take a million requests but only that many connections.
Everything a person can get wrong ends in one line (:class:`GatewayUnavailable`), which never
carries the secret nor a whole key.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable, Iterable, Iterator
from types import TracebackType
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson
from yarl import URL

from pipeline.config import TykSettings
from pipeline.errors import GatewayUnavailable

#: Tyk's answer to a hash listing it does not allow (gateway/api.go, handleGetAllKeys).
HASHED_LISTING_DISABLED = "Hashed key listing is disabled"
#: Tyk's answer to ?hashed=true from a gateway that does not hash keys.
NOT_HASHING = "key hashing is not enabled"
#: What a message from the gateway is cut to in our one line.
MESSAGE_LIMIT = 200

#: Called with a key (or org id) and its session object.
Found = Callable[[str, dict[str, Any]], None]


def shown_url(url: str) -> str:
    """The gateway's URL for messages: without any user and password in it."""
    return str(URL(url).with_user(None))


def message_of(body: bytes) -> str:
    """Tyk's ``message`` from an error body (``{"status":"error","message":…}``), or the body
    itself, on one line and cut short."""
    try:
        decoded = orjson.loads(body)
    except orjson.JSONDecodeError:
        decoded = None
    text = decoded.get("message") if isinstance(decoded, dict) else None
    if not isinstance(text, str):
        text = body.decode(errors="replace")
    text = " ".join(text.split())
    return text if len(text) <= MESSAGE_LIMIT else text[:MESSAGE_LIMIT] + "…"


class TykGateway:
    """The API of one Tyk Gateway; use ``async with``."""

    def __init__(self, settings: TykSettings) -> None:
        if not settings.gateway_url:
            raise GatewayUnavailable(
                "no Tyk Gateway to read: set tyk.gateway_url or QP_TYK__GATEWAY_URL, or pass "
                "--tyk-gateway URL"
            )
        if settings.gateway_secret is None:
            raise GatewayUnavailable(
                "no secret for the Tyk Gateway's API: set tyk.gateway_secret or "
                "QP_TYK__GATEWAY_SECRET (tyk.conf's secret)"
            )
        self.settings = settings
        self.url = settings.gateway_url
        self.shown = shown_url(self.url)
        self._secret = settings.gateway_secret
        self._session: aiohttp.ClientSession | None = None
        #: Appended to each key's path: a listed hash is fetched as a hash.
        self._key_query = "?hashed=true" if settings.hashed_keys else ""

    async def __aenter__(self) -> TykGateway:
        context: ssl.SSLContext | bool = True
        if self.settings.ssl_cafile is not None:
            context = ssl.create_default_context(cafile=str(self.settings.ssl_cafile))
        connector = aiohttp.TCPConnector(limit=self.settings.concurrency, ssl=context)
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=self.settings.timeout),
            headers={"x-tyk-authorization": self._secret.get_secret_value()},
            # Our own decoding: aiohttp's raise_for_status and json() would say less.
            raise_for_status=False,
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    async def _get(self, path: str, what: str, *, gone_on_404: bool = False) -> Any:
        """The decoded JSON answer to ``GET path``; None for a 404 when ``gone_on_404``.
        ``what`` names the request in messages (never a whole key)."""
        assert self._session is not None, "use `async with TykGateway(...)`"
        try:
            async with self._session.get(URL(self.url + path, encoded=True)) as response:
                status = response.status
                body = await response.read()
                content_type = response.content_type
        except TimeoutError:
            raise GatewayUnavailable(
                f"the Tyk Gateway at {self.shown} did not answer {what} within "
                f"{self.settings.timeout:g} s (tyk.timeout)"
            ) from None
        except (aiohttp.ClientError, OSError) as exc:
            reason = str(exc) or type(exc).__name__
            raise GatewayUnavailable(
                f"cannot reach the Tyk Gateway at {self.shown}: {reason}"
            ) from None
        if status == 200:
            try:
                return orjson.loads(body)
            except orjson.JSONDecodeError:
                raise self._not_json(what, status, content_type) from None
        return self._refusal(status, body, content_type, what, gone_on_404)

    def _refusal(
        self, status: int, body: bytes, content_type: str, what: str, gone_on_404: bool
    ) -> None:
        """None for a key or org that is gone; else raises the one line for the answer."""
        message = message_of(body)
        if status == 403:
            raise GatewayUnavailable(
                f"the Tyk Gateway at {self.shown} refused the secret (403 {message!r}): set "
                "tyk.gateway_secret or QP_TYK__GATEWAY_SECRET"
            )
        if status == 404 and HASHED_LISTING_DISABLED in message:
            raise GatewayUnavailable(
                f"the Tyk Gateway at {self.shown} hashes keys and does not list them: set "
                "enable_hashed_keys_listing to true in its tyk.conf (and tyk.hashed_keys here)"
            )
        if status == 400 and NOT_HASHING in message:
            raise GatewayUnavailable(
                f"the Tyk Gateway at {self.shown} does not hash keys: set tyk.hashed_keys to "
                "false (QP_TYK__HASHED_KEYS=false)"
            )
        if status == 404 and gone_on_404:
            try:
                orjson.loads(body)
            except orjson.JSONDecodeError:
                raise self._not_json(what, status, content_type) from None
            return  # listed, then deleted before we asked: gone
        raise GatewayUnavailable(
            f"the Tyk Gateway at {self.shown} answered {what} with {status}: {message}"
        )

    def _not_json(self, what: str, status: int, content_type: str) -> GatewayUnavailable:
        return GatewayUnavailable(
            f"the Tyk Gateway at {self.shown} answered {what} with something other than JSON "
            f"({status}, {content_type or 'no content type'}): is tyk.gateway_url the gateway's "
            "API (its listen port, or control_api_port)?"
        )

    def _listed(self, answer: Any, what: str) -> list[str]:
        keys = answer.get("keys") if isinstance(answer, dict) else None
        if keys is None and isinstance(answer, dict) and "keys" in answer:
            return []  # Go writes null for an empty list
        if not isinstance(keys, list) or not all(isinstance(key, str) for key in keys):
            raise GatewayUnavailable(
                f"the Tyk Gateway at {self.shown} answered {what} without a list of keys"
            )
        return keys

    async def list_keys(self) -> list[str]:
        """Every key the gateway holds (hashes, when it hashes keys)."""
        return self._listed(await self._get("/tyk/keys", "GET /tyk/keys"), "GET /tyk/keys")

    async def list_orgs(self) -> list[str] | None:
        """The org ids that have an org session; None when the gateway lists none (a 404:
        no org sessions, or org routes that do not exist in RPC mode)."""
        what = "GET /tyk/org/keys"
        answer = await self._get("/tyk/org/keys", what, gone_on_404=True)
        return None if answer is None else self._listed(answer, what)

    async def fetch_sessions(
        self,
        keys: Iterable[str],
        found: Found,
        fetched: Callable[[], None] | None = None,
    ) -> int:
        """Each key's session to ``found``; ``fetched`` after each request (progress).
        Returns how many keys were gone by the time they were asked for."""
        what = "GET /tyk/keys/{key}"
        return await self._fetch_all(keys, f"/tyk/keys/{{}}{self._key_query}", what, found, fetched)

    async def fetch_orgs(self, org_ids: Iterable[str], found: Found) -> int:
        """Each org's session to ``found``; returns how many had none."""
        what = "GET /tyk/org/keys/{org_id}"
        return await self._fetch_all(org_ids, "/tyk/org/keys/{}", what, found, None)

    async def _fetch_all(
        self,
        identifiers: Iterable[str],
        path: str,
        what: str,
        found: Found,
        fetched: Callable[[], None] | None,
    ) -> int:
        # `concurrency` tasks take identifiers from one iterator: never more requests in
        # flight, and never a million pending tasks.
        pending: Iterator[str] = iter(identifiers)
        gone = 0

        async def fetch_each() -> None:
            nonlocal gone
            for identifier in pending:
                escaped = quote(identifier, safe="")
                session = await self._get(path.format(escaped), what, gone_on_404=True)
                if session is None:
                    gone += 1
                elif isinstance(session, dict):
                    found(identifier, session)
                else:
                    raise GatewayUnavailable(
                        f"the Tyk Gateway at {self.shown} answered {what} with JSON that is "
                        "not a session object"
                    )
                if fetched is not None:
                    fetched()

        tasks = [asyncio.ensure_future(fetch_each()) for _ in range(self.settings.concurrency)]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()  # one failed: the others stop too
            await asyncio.gather(*tasks, return_exceptions=True)
        return gone
