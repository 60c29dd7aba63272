"""pipeline.webhooks.ssrf: which addresses and URLs a webhook may target, as pure decisions."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.errors import PermanentDeliveryError
from pipeline.webhooks.ssrf import (
    Address,
    Network,
    TargetRefused,
    check_url,
    parse_networks,
    refusal_of,
    refusal_reason,
)

LOOPBACK = parse_networks(["127.0.0.0/8", "::1/128"])

REFUSED = [
    ("127.0.0.1", "loopback"),
    ("127.1.2.3", "loopback"),
    ("::1", "loopback"),
    ("10.0.0.1", "private"),
    ("172.16.0.1", "private"),
    ("192.168.1.1", "private"),
    ("169.254.169.254", "link-local"),
    ("::ffff:169.254.169.254", "link-local"),
    ("::ffff:127.0.0.1", "loopback"),
    ("100.64.0.1", "shared address space (CGNAT)"),
    ("100.127.255.254", "shared address space (CGNAT)"),
    ("0.0.0.0", "unspecified"),
    ("::", "unspecified"),
    ("fe80::1", "link-local"),
    ("fe80::1%eth0", "link-local"),
    ("fc00::1", "private"),
    ("fd12:3456::1", "private"),
    ("fec0::1", "private"),  # deprecated site-local, which ipaddress calls global
    ("224.0.0.1", "multicast"),
    ("ff0e::1", "multicast"),  # ipaddress calls global-scope multicast global
    ("240.0.0.1", "reserved"),
    ("255.255.255.255", "reserved"),
    ("::8.8.8.8", "reserved"),  # deprecated IPv4-compatible form
    ("2002:7f00:0001::", "loopback"),  # 6to4 of 127.0.0.1
    ("2002:a00:1::", "private"),  # 6to4 of 10.0.0.1
    ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "private"),  # Teredo, client 192.0.2.45
    ("64:ff9b::a9fe:a9fe", "link-local"),  # NAT64 of 169.254.169.254
]

ADMITTED = [
    "8.8.8.8",
    "1.1.1.1",
    "2606:4700:4700::1111",
    "::ffff:8.8.8.8",
    "2002:808:808::",  # 6to4 of 8.8.8.8
    "64:ff9b::808:808",  # NAT64 of 8.8.8.8
]


def ip(text: str) -> Address:
    return ipaddress.ip_address(text)


def embedded_ipv4(address: Address) -> list[ipaddress.IPv4Address]:
    """Every IPv4 address an IPv6 address carries, worked out independently of the guard."""
    if not isinstance(address, ipaddress.IPv6Address):
        return []
    found = [a for a in (address.ipv4_mapped, address.sixtofour) if a is not None]
    if address.teredo is not None:
        found.append(address.teredo[1])
    if address in ipaddress.IPv6Network("64:ff9b::/96"):
        found.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return found


@pytest.mark.parametrize(("text", "reason"), REFUSED)
def test_non_global_addresses_are_refused_with_their_reason(text: str, reason: str) -> None:
    assert refusal_reason(ip(text), ()) == reason


@pytest.mark.parametrize("text", ADMITTED)
def test_global_addresses_are_admitted(text: str) -> None:
    assert refusal_reason(ip(text), ()) is None


@pytest.mark.parametrize("text", ["127.0.0.1", "127.200.0.9", "::1", "::ffff:127.0.0.1"])
def test_loopback_allow_list_admits_loopback_in_every_form(text: str) -> None:
    assert refusal_reason(ip(text), LOOPBACK) is None


@pytest.mark.parametrize("text", ["10.0.0.1", "169.254.169.254", "::ffff:10.0.0.1", "fe80::1"])
def test_loopback_allow_list_admits_nothing_else(text: str) -> None:
    assert refusal_reason(ip(text), LOOPBACK) is not None


def test_an_allow_listed_mapped_network_admits_the_mapped_form() -> None:
    assert refusal_reason(ip("::ffff:10.0.0.1"), parse_networks(["::ffff:10.0.0.0/104"])) is None


def test_parse_networks_ignores_host_bits_and_whitespace() -> None:
    assert parse_networks(["10.1.2.3/16", " ::1 ", "192.168.0.7"]) == (
        ipaddress.IPv4Network("10.1.0.0/16"),
        ipaddress.IPv6Network("::1/128"),
        ipaddress.IPv4Network("192.168.0.7/32"),
    )


def test_parse_networks_rejects_garbage() -> None:
    with pytest.raises(ValueError, match="localhost"):
        parse_networks(["localhost"])


def test_target_refused_is_permanent() -> None:
    assert issubclass(TargetRefused, PermanentDeliveryError)
    assert not TargetRefused("refused: x").retriable


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://127.0.0.1:8080/x", "refused: 127.0.0.1 is loopback"),
        ("http://[::1]/", "refused: ::1 is loopback"),
        (
            "http://[::ffff:169.254.169.254]/",
            "refused: ::ffff:a9fe:a9fe (169.254.169.254) is link-local",
        ),
        ("ftp://example.com/", "refused: scheme 'ftp' is not http or https"),
        ("file:///etc/passwd", "refused: scheme 'file' is not http or https"),
        ("http:///hooks", "has no host"),
        ("http://[::1", "is not a valid URL"),
        ("http://user:pw@10.0.0.1/", "refused: 10.0.0.1 is private"),
        ("http://[fe80::1%25eth0]/", "is link-local"),
        # Legacy numeric forms skip the resolver just like canonical literals.
        ("http://127.1/", "refused: 127.1 is not a canonical IP address"),
        ("http://2130706433/", "refused: 2130706433 is not a canonical IP address"),
        ("http://127.0.0.1./", "refused: 127.0.0.1. is not a canonical IP address"),
    ],
)
def test_check_url_refuses(url: str, message: str) -> None:
    with pytest.raises(TargetRefused) as info:
        check_url(url, ())
    assert message in str(info.value)


def test_a_refused_address_says_how_to_allow_it() -> None:
    with pytest.raises(TargetRefused) as info:
        check_url("http://127.0.0.1:8080/x", ())
    assert str(info.value).endswith("add its network to delivery.allow_networks")
    assert not info.value.endpoint_failed


@pytest.mark.parametrize(
    "url",
    [
        "https://8.8.8.8/",
        "http://example.com/",  # a name: left to the resolver
        "http://localhost:8080/",  # likewise, even though it will be refused there
        "HTTPS://[2606:4700:4700::1111]:8443/hook",
    ],
)
def test_check_url_admits(url: str) -> None:
    check_url(url, ())


def test_check_url_honours_the_allow_list() -> None:
    check_url("http://127.0.0.1:8080/x", LOOPBACK)
    check_url("http://[::ffff:127.0.0.1]/", LOOPBACK)
    with pytest.raises(TargetRefused, match="private"):
        check_url("http://10.0.0.1/", LOOPBACK)


def test_refusal_of_finds_the_refusal_behind_wrappers() -> None:
    refused = TargetRefused("refused: 10.0.0.1 is private")
    try:
        try:
            raise refused
        except TargetRefused as exc:
            raise OSError("connect failed") from exc
    except OSError as exc:
        wrapped = exc
    try:
        try:
            raise wrapped
        except OSError:
            raise RuntimeError("while handling") from None
    except RuntimeError as exc:
        suppressed = exc  # __cause__ is None, but __context__ still leads there

    assert refusal_of(refused) is refused
    assert refusal_of(wrapped) is refused
    assert refusal_of(suppressed) is refused
    assert refusal_of(OSError("unrelated")) is None


def test_refusal_of_survives_a_cycle() -> None:
    first, second = OSError("a"), OSError("b")
    first.__context__, second.__context__ = second, first
    assert refusal_of(first) is None


@given(st.ip_addresses(network="10.0.0.0/8"))
def test_every_address_in_ten_slash_eight_is_private(address: Address) -> None:
    assert refusal_reason(address, ()) == "private"


@given(st.ip_addresses(v=4))
def test_ipv4_is_admitted_exactly_when_global_and_unicast(address: ipaddress.IPv4Address) -> None:
    admitted = refusal_reason(address, ()) is None
    assert admitted == (address.is_global and not address.is_multicast)


@given(st.ip_addresses(v=4), st.booleans())
def test_a_mapped_address_gets_its_ipv4_verdict(
    address: ipaddress.IPv4Address, allow_loopback: bool
) -> None:
    allowed = LOOPBACK if allow_loopback else ()
    mapped = ipaddress.IPv6Address(f"::ffff:{address}")
    assert refusal_reason(mapped, allowed) == refusal_reason(address, allowed)


POOL = parse_networks(
    ["127.0.0.0/8", "::1/128", "10.0.0.0/8", "169.254.0.0/16", "fc00::/7", "100.64.0.0/10"]
)
ANY_ADDRESS = st.one_of(
    st.ip_addresses(),
    st.ip_addresses(v=4).map(lambda a: ipaddress.IPv6Address(f"::ffff:{a}")),
    st.ip_addresses(v=4).map(lambda a: ipaddress.IPv6Address((0x2002 << 112) | (int(a) << 80))),
)


@given(ANY_ADDRESS, st.lists(st.sampled_from(POOL), unique=True))
def test_nothing_is_admitted_unless_global_or_allow_listed(
    address: Address, allowed: list[Network]
) -> None:
    if refusal_reason(address, allowed) is None:
        # Where the packets end up: the embedded IPv4 host when there is one.
        destinations = embedded_ipv4(address) or [address]
        assert all(form.is_global for form in destinations) or any(
            form in network for form in [address, *destinations] for network in allowed
        )
