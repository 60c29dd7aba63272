"""Asking every worker of the group for its snapshot, as the page needs the whole group.

Each worker knows the others' web addresses from the last rebalance (faust's canonical URLs,
as ``GET /quota/{key}`` forwards by them). A worker that does not answer in time is named on
the page, and the rest are shown: one worker down must not blank the page of the others.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple

import aiohttp
import orjson
from pydantic import SecretStr

#: The route each worker answers with its own snapshot (bearer token, like the HTTP API).
SNAPSHOT_PATH = "/ops/worker.json"
#: Seconds to wait for a worker's snapshot.
ASK_WITHIN = 5.0


class GroupView(NamedTuple):
    """What the page shows of the group: each worker's snapshot, and who did not answer."""

    snapshots: list[dict[str, Any]]
    #: (worker URL, why) of each that did not answer.
    missing: list[tuple[str, str]]


async def ask_group(
    peers: list[str],
    own_url: str,
    own: Callable[[], Awaitable[dict[str, Any]]],
    token: SecretStr,
    session: aiohttp.ClientSession,
) -> GroupView:
    """Every worker's snapshot: this worker's from ``own``, the others' over HTTP."""
    others = [url for url in peers if url != own_url]
    answers = await asyncio.gather(
        own(), *(_ask(url, token, session) for url in others), return_exceptions=True
    )
    snapshots: list[dict[str, Any]] = []
    missing: list[tuple[str, str]] = []
    for url, answer in zip([own_url, *others], answers, strict=True):
        if isinstance(answer, BaseException):
            missing.append((url, _why(answer)))
        else:
            snapshots.append(answer)
    return GroupView(snapshots, missing)


async def _ask(url: str, token: SecretStr, session: aiohttp.ClientSession) -> dict[str, Any]:
    async with session.get(
        url + SNAPSHOT_PATH,
        headers={"Authorization": f"Bearer {token.get_secret_value()}"},
        timeout=aiohttp.ClientTimeout(total=ASK_WITHIN),
    ) as response:
        if response.status != 200:
            raise RuntimeError(f"answered {response.status}")
        snapshot: dict[str, Any] = orjson.loads(await response.read())
        return snapshot


def _why(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return f"no answer within {ASK_WITHIN:g} s"
    if isinstance(exc, aiohttp.ClientConnectionError):
        return "unreachable"
    return str(exc) or type(exc).__name__
