"""Messages as real gateways write them to Kafka, for the demo, the tests and the bench: Tyk
Pump's Kafka pump (tyk-pump ``pumps/kafka.go``) and APISIX's kafka-logger (``meta_format``
default, apisix/utils/log-util.lua ``get_full_log``)."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Any

import orjson

from pipeline.config import Settings

#: What Tyk itself answers when it refuses a request (its templates/error.json, X-Generator).
TYK_ERRORS = {
    401: "Authorization field missing",
    403: "Access to this API has been disallowed",
    429: "Rate Limit Exceeded",
}


def rfc3339_nano(ts: float) -> str:
    """A Go ``time.Time`` as encoding/json writes it (RFC 3339, nanoseconds, no trailing
    zeros)."""
    moment = datetime.fromtimestamp(ts, UTC)
    # Microseconds, as a float holds them, in Go's nine digits.
    fraction = f".{moment.microsecond * 1000:09d}".rstrip("0").rstrip(".")
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + fraction + "Z"


def tyk_raw_response(code: int, error: str, *, by_tyk: bool = True) -> str:
    """A detailed record's ``raw_response``: the response as sent, in base64."""
    headers = "Content-Type: application/json\r\n" + ("X-Generator: tyk.io\r\n" if by_tyk else "")
    body = orjson.dumps({"error": error}).decode()
    wire = f"HTTP/1.1 {code} Status\r\n{headers}Content-Length: {len(body)}\r\n\r\n{body}"
    return base64.b64encode(wire.encode()).decode()


def tyk_pump_message(
    *,
    key: str,
    org_id: str,
    api_id: str,
    ts: float,
    response_code: int = 200,
    raw_response: str = "",
    meta_data: dict[str, str] | None = None,
    path: str = "/orders/1",
) -> bytes:
    """One analytics record as the Kafka pump sends it: its 20 fields, keys sorted as Go sorts
    a map's, plus the pump's ``meta_data`` at the top level."""
    message: dict[str, Any] = {
        "alias": "",
        "api_id": api_id,
        "api_key": key,
        "api_name": "Orders",
        "api_version": "Default",
        "content_length": 0,
        "host": "api.example.com",
        "ip_address": "10.0.0.5",
        "method": "GET",
        "oauth_id": "",
        "org_id": org_id,
        "path": path,
        "raw_path": path,
        "raw_request": "",
        "raw_response": raw_response,
        "request_time_ms": 12,
        "response_code": response_code,
        "tags": [f"key-{key}", f"org-{org_id}", f"api-{api_id}"] if key else [f"api-{api_id}"],
        "timestamp": rfc3339_nano(ts),
        "user_agent": "curl/8.5.0",
    }
    message.update(meta_data or {})
    return orjson.dumps(message, option=orjson.OPT_SORT_KEYS)


def apisix_entry(
    *,
    consumer: str | None,
    route_id: str,
    start_time_ms: float,
    status: int = 200,
    upstream: bool = True,
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    """One log entry of kafka-logger's default format."""
    entry: dict[str, Any] = {
        "client_ip": "127.0.0.1",
        "latency": 18.0 + (393 if upstream else 0),
        "request": {
            "headers": {"host": "127.0.0.1:9080", "user-agent": "curl/8.5.0", **(headers or {})},
            "method": "GET",
            "querystring": {},
            "size": 83,
            "uri": "/get",
            "url": "http://127.0.0.1:9080/get",
        },
        "response": {
            "headers": {"content-type": "application/json"},
            "size": 475,
            "status": status,
        },
        "route_id": route_id,
        "server": {"hostname": "apisix", "version": "3.12.0"},
        "service_id": "",
        "start_time": start_time_ms,
        "apisix_latency": 18.0,
    }
    if upstream:
        entry["upstream"] = "10.0.0.7:80"
        entry["upstream_latency"] = 393
    if consumer is not None:
        entry["consumer"] = {"username": consumer}
    return entry


async def send_tyk_pump_messages(
    settings: Settings, topic: str, *, key: str, org_id: str, api_id: str, count: int, code: int
) -> None:
    """``count`` requests of ``key``, one a millisecond from now, as Tyk Pump sends them."""
    import time

    from pipeline.engine.clients import producer

    now = time.time()
    async with producer(settings) as client:
        for index in range(count):
            value = tyk_pump_message(
                key=key, org_id=org_id, api_id=api_id, ts=now + index / 1000, response_code=code
            )
            await client.send(topic, value)
        await client.flush()


def main(argv: list[str] | None = None) -> None:
    """Send Tyk Pump messages to an ingest source, as a Tyk Pump would (without a Tyk)."""
    import argparse
    import asyncio

    from pipeline.config import load_settings

    parser = argparse.ArgumentParser(
        prog="python -m pipeline.devtools.gateway_logs",
        description="Send Tyk Pump analytics messages to Kafka (QP_KAFKA_BOOTSTRAP, QP_CONFIG).",
    )
    parser.add_argument("--config", help="a quota-pipeline config: its kafka section is used")
    parser.add_argument("--topic", required=True, help="the ingest source's topic")
    parser.add_argument("--key", required=True, help="api_key: the key, or its hash")
    parser.add_argument("--org", required=True, help="org_id")
    parser.add_argument("--api", default="orders", help="api_id")
    parser.add_argument("--count", type=int, default=1)
    parser.add_argument("--code", type=int, default=200, help="response_code")
    args = parser.parse_args(argv)
    settings = load_settings(args.config)
    asyncio.run(
        send_tyk_pump_messages(
            settings,
            args.topic,
            key=args.key,
            org_id=args.org,
            api_id=args.api,
            count=args.count,
            code=args.code,
        )
    )
    print(f"sent {args.count} Tyk Pump messages to {args.topic}")


if __name__ == "__main__":
    main()
