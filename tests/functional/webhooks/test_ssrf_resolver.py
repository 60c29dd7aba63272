"""GuardedResolver on real lookups, and guarded connectors requesting a loopback server.

Only loopback is ever contacted. Names that must resolve somewhere else come from a small table
resolver passed as the *inner* resolver: it plays the DNS server, GuardedResolver is unchanged.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from collections.abc import AsyncIterator, Mapping, Sequence

import aiohttp
import pytest
from aiohttp.abc import AbstractResolver, ResolveResult

from pipeline.devtools.receiver import WebhookReceiver
from pipeline.webhooks.ssrf import (
    GuardedResolver,
    TargetRefused,
    check_url,
    guarded_connector,
    parse_networks,
    refusal_of,
)

LOOPBACK = parse_networks(["127.0.0.0/8", "::1/128"])
TIMEOUT = aiohttp.ClientTimeout(total=5)


class TableResolver(AbstractResolver):
    """Answers each name with the next answer in its list (the last one repeats)."""

    def __init__(self, table: Mapping[str, Sequence[Sequence[str]]]) -> None:
        self._table = table
        self.lookups: dict[str, int] = {}
        self.closed = False

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        answers = self._table[host]
        count = self.lookups.get(host, 0)
        self.lookups[host] = count + 1
        return [
            ResolveResult(
                hostname=host,
                host=address,
                port=port,
                family=socket.AF_INET6 if ":" in address else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST | socket.AI_NUMERICSERV,
            )
            for address in answers[min(count, len(answers) - 1)]
        ]

    async def close(self) -> None:
        self.closed = True


@pytest.fixture
async def receiver() -> AsyncIterator[WebhookReceiver]:
    async with WebhookReceiver() as started:
        yield started


def addresses(results: Sequence[ResolveResult]) -> list[str]:
    return [result["host"] for result in results]


async def test_localhost_is_refused_without_an_allow_list() -> None:
    resolver = GuardedResolver()
    # Whether ::1 is among the answers, and first, depends on the machine's hosts file.
    with pytest.raises(TargetRefused, match=r"^refused: localhost resolves to .*\(loopback\)"):
        await resolver.resolve("localhost", 80, socket.AF_UNSPEC)
    await resolver.close()


async def test_localhost_is_admitted_with_the_loopback_allow_list() -> None:
    resolver = GuardedResolver(LOOPBACK)
    results = await resolver.resolve("localhost", 80, socket.AF_UNSPEC)
    await resolver.close()
    assert results
    assert all(ipaddress.ip_address(host).is_loopback for host in addresses(results))


async def test_a_numeric_name_is_judged_by_what_it_resolves_to() -> None:
    # aiohttp hands "0x7f.1" to the resolver as a name; getaddrinfo reads it as 127.0.0.1.
    resolver = GuardedResolver()
    with pytest.raises(TargetRefused, match="loopback"):
        await resolver.resolve("0x7f.1", 80, socket.AF_UNSPEC)


async def test_a_name_resolving_to_a_private_address_is_refused() -> None:
    inner = TableResolver({"internal.test": [["10.0.0.1"]]})
    resolver = GuardedResolver(inner=inner)
    with pytest.raises(TargetRefused) as info:
        await resolver.resolve("internal.test", 443, socket.AF_UNSPEC)
    assert str(info.value) == (
        "refused: internal.test resolves to 10.0.0.1 (private); "
        "to deliver there, add its network to delivery.allow_networks"
    )


async def test_a_mixed_answer_keeps_only_admitted_addresses(
    caplog: pytest.LogCaptureFixture,
) -> None:
    inner = TableResolver({"mixed.test": [["10.0.0.1", "93.184.215.14", "::ffff:127.0.0.1"]]})
    resolver = GuardedResolver(inner=inner)
    with caplog.at_level(logging.WARNING, logger="pipeline.webhooks.ssrf"):
        results = await resolver.resolve("mixed.test", 443, socket.AF_UNSPEC)
    assert addresses(results) == ["93.184.215.14"]
    assert "host=mixed.test" in caplog.text
    assert "::ffff:127.0.0.1 (loopback)" in caplog.text


async def test_every_lookup_is_checked_again() -> None:
    # A rebinding name: public on the first lookup, internal on the next.
    inner = TableResolver({"rebind.test": [["93.184.215.14"], ["169.254.169.254"]]})
    resolver = GuardedResolver(inner=inner)
    assert addresses(await resolver.resolve("rebind.test", 80)) == ["93.184.215.14"]
    with pytest.raises(TargetRefused, match="link-local"):
        await resolver.resolve("rebind.test", 80)


async def test_close_closes_the_inner_resolver() -> None:
    inner = TableResolver({})
    await GuardedResolver(inner=inner).close()
    assert inner.closed


async def test_a_request_to_localhost_is_refused(receiver: WebhookReceiver) -> None:
    async with aiohttp.ClientSession(
        connector=guarded_connector([], limit=4, limit_per_host=2), timeout=TIMEOUT
    ) as session:
        # aiohttp wraps only OSErrors from the resolver (in ClientConnectorDNSError); any other
        # exception, TargetRefused included, reaches the caller as it was raised.
        with pytest.raises(TargetRefused, match="loopback") as info:
            await session.get(f"http://localhost:{receiver.port}/")
    assert refusal_of(info.value) is info.value
    assert receiver.received == []


async def test_a_request_to_localhost_passes_with_the_loopback_allow_list(
    receiver: WebhookReceiver,
) -> None:
    async with (
        aiohttp.ClientSession(
            connector=guarded_connector(LOOPBACK, limit=4, limit_per_host=2), timeout=TIMEOUT
        ) as session,
        session.get(f"http://localhost:{receiver.port}/hook") as response,
    ):
        assert response.status == 200
    assert [received.path for received in receiver.received] == ["/hook"]


async def test_a_request_to_a_numeric_name_is_refused(receiver: WebhookReceiver) -> None:
    async with aiohttp.ClientSession(
        connector=guarded_connector([], limit=4, limit_per_host=2), timeout=TIMEOUT
    ) as session:
        with pytest.raises(TargetRefused, match="loopback"):
            await session.get(f"http://0x7f.1:{receiver.port}/")
    assert receiver.received == []


async def test_an_ip_literal_skips_the_resolver_so_check_url_must_run_first(
    receiver: WebhookReceiver,
) -> None:
    url = f"http://127.0.0.1:{receiver.port}/literal"
    async with (
        aiohttp.ClientSession(
            connector=guarded_connector([], limit=4, limit_per_host=2), timeout=TIMEOUT
        ) as session,
        session.get(url) as response,
    ):
        # This is why check_url exists: the connector never asked the resolver.
        assert response.status == 200
    with pytest.raises(TargetRefused, match="loopback"):
        check_url(url, ())


async def test_a_rebinding_name_is_refused_on_the_lookup_that_turns_internal(
    receiver: WebhookReceiver,
) -> None:
    # The receiver listens on 127.0.0.1 only; 127.0.0.1 is allow-listed, 127.0.0.2 is not.
    inner = TableResolver({"rebind.test": [["127.0.0.1"], ["127.0.0.2"]]})
    connector = aiohttp.TCPConnector(
        resolver=GuardedResolver(parse_networks(["127.0.0.1/32"]), inner=inner),
        use_dns_cache=False,
        force_close=True,  # a pooled connection would be reused without a new lookup
    )
    url = f"http://rebind.test:{receiver.port}/"
    async with aiohttp.ClientSession(connector=connector, timeout=TIMEOUT) as session:
        async with session.get(url) as response:
            assert response.status == 200
        with pytest.raises(TargetRefused, match=r"127\.0\.0\.2 \(loopback\)"):
            await session.get(url)
    assert inner.lookups == {"rebind.test": 2}
    assert len(receiver.received) == 1
