"""Helpers every agent shares: rejecting a record, grouping a batch by source partition."""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from pipeline.app import Pipeline
from pipeline.errors import InvalidRecord
from pipeline.rejections import rejection

log = logging.getLogger(__name__)

T = TypeVar("T")


async def send_rejection(pipeline: Pipeline, event: Any, reason: str) -> None:
    """Route one bad record to pipeline.rejected; the stream goes on."""
    message = event.message
    await pipeline.topics.rejected.send(
        key=message.key,
        value=rejection(
            topic=message.topic,
            partition=message.partition,
            offset=message.offset,
            key=message.key,
            value=message.value,
            reason=reason,
            now=time.time(),
        ),
    )
    log.info(
        "rejected record topic=%s partition=%s offset=%s reason=%s",
        message.topic,
        message.partition,
        message.offset,
        reason,
    )


async def decode_batch(
    pipeline: Pipeline, events: Iterable[Any], decode: Callable[[bytes | None], T]
) -> dict[int, list[tuple[Any, T]]]:
    """Decode a batch, rejecting bad records; the good ones grouped by source partition."""
    by_partition: dict[int, list[tuple[Any, T]]] = defaultdict(list)
    for event in events:
        try:
            value = decode(event.value)
        except InvalidRecord as exc:
            await send_rejection(pipeline, event, exc.reason)
            continue
        by_partition[event.message.partition].append((event, value))
    return by_partition
