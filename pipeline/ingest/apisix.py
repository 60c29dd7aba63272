"""APISIX kafka-logger messages (``meta_format`` default), read into hits (pure).

A message is one log entry (``batch_max_size`` 1) or, by default, a JSON array of them
(apisix/plugins/kafka-logger.lua). An entry (apisix/utils/log-util.lua ``get_full_log``) has
``start_time`` (epoch milliseconds), ``route_id``, ``service_id``, ``response.status``,
``upstream`` (only when an upstream was reached) and ``consumer.username`` (only when a
consumer authenticated). Where the key, the org and the API come from is configured as JMESPath
expressions (config ``ingest.sources[]``: ``key_path``, ``org_path`` or ``org_id``,
``api_path``). A message is taken whole or rejected whole: a rejection keeps the message's
bytes, and replaying it must not count the entries taken before.
"""

from __future__ import annotations

import math
from typing import Any

import jmespath
import orjson

from pipeline.config import ApisixSource
from pipeline.errors import InvalidRecord
from pipeline.ingest.hits import AddHit, Hit, Reader
from pipeline.records.checks import MAX_ID_LENGTH


def _text(value: Any) -> str:
    """A path's result as an id: strings as they are, whole numbers as digits, else empty."""
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return ""


def apisix_reader(source: ApisixSource) -> Reader:
    """The reader of ``source``'s messages: one hit per log entry."""
    key_path = jmespath.compile(source.key_path)
    api_path = jmespath.compile(source.api_path) if source.api_path else None
    org_path = jmespath.compile(source.org_path) if source.org_path else None
    fixed_org = source.org_id or ""
    refused = frozenset(source.refused_codes)

    def entry_hit(entry: Any) -> Hit:
        if not isinstance(entry, dict):
            raise InvalidRecord("not a JSON object")
        start = entry.get("start_time")
        if isinstance(start, bool) or not isinstance(start, (int, float)):
            raise InvalidRecord("start_time must be a number of epoch milliseconds")
        if not math.isfinite(start):
            raise InvalidRecord("start_time must be finite")
        org_id = fixed_org or _text(org_path.search(entry) if org_path else None)
        if not org_id:
            raise InvalidRecord(f"org_path {source.org_path!r} finds no org id")
        key = _text(key_path.search(entry))
        api_id = _text(api_path.search(entry)) if api_path else ""
        if len(org_id) > MAX_ID_LENGTH or len(key) > MAX_ID_LENGTH:
            raise InvalidRecord(
                f"the org id and the key must be at most {MAX_ID_LENGTH} characters"
            )
        response = entry.get("response")
        status = response.get("status") if isinstance(response, dict) else None
        if key and status in refused and "upstream" not in entry:
            key = ""  # refused by APISIX itself (auth, limit-count): counts for the org only
        return Hit(start / 1000, org_id, key, api_id or None)

    def read(raw: bytes | None, add: AddHit) -> None:
        if raw is None:
            raise InvalidRecord("an APISIX log message has no value")
        try:
            message = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise InvalidRecord(f"not JSON: {exc}") from None
        entries = message if isinstance(message, list) else [message]
        hits = []
        for index, entry in enumerate(entries):
            try:
                hits.append(entry_hit(entry))
            except InvalidRecord as exc:
                where = f"entry {index}" if isinstance(message, list) else "the log entry"
                raise InvalidRecord(f"{where}: {exc}") from None
        for hit in hits:  # only once every entry has read: the message is taken whole
            add(*hit)

    return read
