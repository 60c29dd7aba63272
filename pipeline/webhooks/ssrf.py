"""Keep webhook targets on the public internet: the SSRF guard.

Names are checked on the addresses they resolve to, inside the connector's resolver, so the
address that gets connected to is the address that was checked (DNS rebinding gains nothing).
aiohttp never asks the resolver about IP-literal hosts, so :func:`check_url` covers those and
must run on every URL before it is requested. Redirects must stay off: a followed redirect to
an IP literal would skip both checks.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from collections.abc import Callable, Iterable, Sequence
from typing import TypeAlias

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver
from yarl import URL

from pipeline.errors import PermanentDeliveryError

Address: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address
Network: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network

logger = logging.getLogger(__name__)

# ipaddress calls it neither private nor global; RFC 6598 reserves it for carrier-grade NAT.
_SHARED_ADDRESS_SPACE = ipaddress.IPv4Network("100.64.0.0/10")
# RFC 6052's well-known NAT64 prefix: under DNS64 every IPv4-only target resolves into it.
_NAT64_PREFIX = ipaddress.IPv6Network("64:ff9b::/96")
_SCHEMES = frozenset({"http", "https"})

# First match names the reason, so the specific names come before ipaddress's broad "private"
# and "reserved", which cover most of them too.
_CLASSES: tuple[tuple[str, Callable[[Address], bool]], ...] = (
    ("unspecified", lambda a: a.is_unspecified),
    ("loopback", lambda a: a.is_loopback),
    ("link-local", lambda a: a.is_link_local),
    # ipaddress counts 224.0.0.0/4 and ff0e::/16 as global.
    ("multicast", lambda a: a.is_multicast),
    ("shared address space (CGNAT)", lambda a: a in _SHARED_ADDRESS_SPACE),
    ("reserved", lambda a: a.is_reserved),
    # Site-local fec0::/10 is deprecated private space that ipaddress still counts as global.
    (
        "private",
        lambda a: a.is_private or (isinstance(a, ipaddress.IPv6Address) and a.is_site_local),
    ),
    ("not globally routable", lambda a: not a.is_global),
)


class TargetRefused(PermanentDeliveryError):
    """The target is, or resolves only to, addresses that the SSRF policy refuses."""

    endpoint_failed = False


#: Said after a refused address: how an operator admits it.
ALLOW_HINT = "; to deliver there, add its network to delivery.allow_networks"


def parse_networks(specs: Iterable[str]) -> tuple[Network, ...]:
    """Allow-list entries (``10.1.0.0/16``, ``::1``) as networks; host bits are ignored."""
    return tuple(ipaddress.ip_network(spec.strip(), strict=False) for spec in specs)


def refusal_reason(address: Address, allowed: Sequence[Network] = ()) -> str | None:
    """Why ``address`` may not be contacted, or None when it may."""
    translated = _translated_ipv4(address)
    tunnelled = _tunnelled_ipv4(address)
    forms = [form for form in (address, translated, tunnelled) if form is not None]
    if any(form in network for form in forms for network in allowed):
        return None
    if translated is not None:
        # The kernel (mapped) or the NAT64 gateway sends the packets to the IPv4 address, so its
        # verdict is the whole verdict; ipaddress alone would call ::ffff:0:0/96 "reserved".
        return _classify(translated)
    if tunnelled is not None:
        # A 6to4 or Teredo relay delivers to the embedded IPv4 host, and the prefix must route too.
        return _classify(tunnelled) or _classify(address)
    return _classify(address)


def check_url(url: str, allowed: Sequence[Network] = ()) -> None:
    """Raise TargetRefused unless ``url`` is http(s) and any IP-literal host in it is admitted."""
    try:
        parsed = URL(url)
    except ValueError as exc:
        raise TargetRefused(f"refused: {url!r} is not a valid URL") from exc
    if parsed.scheme not in _SCHEMES:
        raise TargetRefused(f"refused: scheme {parsed.scheme!r} is not http or https")
    # raw_host is what aiohttp's connector looks at, so check exactly that string.
    host = parsed.raw_host
    if not host:
        raise TargetRefused(f"refused: {url!r} has no host")
    if not _treated_as_ip_literal(host):
        return  # a name: the GuardedResolver checks whatever it resolves to
    try:
        address = ipaddress.ip_address(host)
    except ValueError as exc:
        # Forms like 127.1, 2130706433 or 127.0.0.1. skip the resolver too, and the socket layer
        # may read them as an address; refusing beats guessing which one.
        raise TargetRefused(f"refused: {host} is not a canonical IP address") from exc
    reason = refusal_reason(address, allowed)
    if reason is not None:
        raise TargetRefused(f"refused: {_describe(address)} is {reason}{ALLOW_HINT}")


def refusal_of(exc: BaseException) -> TargetRefused | None:
    """The TargetRefused that ``exc`` is, or was raised from or while handling, if any."""
    pending: list[BaseException] = [exc]
    seen: set[int] = set()
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, TargetRefused):
            return current
        if current.__context__ is not None:
            pending.append(current.__context__)
        if current.__cause__ is not None:
            pending.append(current.__cause__)
    return None


class GuardedResolver(AbstractResolver):
    """An aiohttp resolver that drops every resolved address the SSRF policy refuses.

    Build it inside the running event loop, as aiohttp's own resolvers are.
    """

    def __init__(
        self, allowed: Sequence[Network] = (), *, inner: AbstractResolver | None = None
    ) -> None:
        self._allowed = tuple(allowed)
        # getaddrinfo sees the hosts file and nsswitch like the rest of the machine, and a
        # ThreadedResolver holds nothing to release: TCPConnector never closes a resolver it
        # was handed, so an aiodns-backed one would leak unless its owner remembered to.
        self._inner: AbstractResolver = inner if inner is not None else ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        """Resolve with the inner resolver; raise TargetRefused when no address is admitted."""
        results = await self._inner.resolve(host, port, family)
        admitted: list[ResolveResult] = []
        refused: list[str] = []
        for result in results:
            reason = _text_refusal(result["host"], self._allowed)
            if reason is None:
                admitted.append(result)
            else:
                refused.append(f"{result['host']} ({reason})")
        if refused and not admitted:
            raise TargetRefused(f"refused: {host} resolves to {', '.join(refused)}{ALLOW_HINT}")
        if refused:
            # A name answering with public and internal addresses is either split-horizon DNS
            # or a rebinding attempt; either way an operator wants to know.
            logger.warning("dropped refused addresses host=%s refused=%s", host, ", ".join(refused))
        return admitted

    async def close(self) -> None:
        """Called by whoever owns the resolver when done with it; closes the inner resolver."""
        await self._inner.close()


def guarded_connector(
    allowed: Sequence[Network], *, limit: int, limit_per_host: int
) -> aiohttp.TCPConnector:
    """A TCPConnector whose every name lookup goes through a GuardedResolver; needs a loop."""
    return aiohttp.TCPConnector(
        resolver=GuardedResolver(allowed), limit=limit, limit_per_host=limit_per_host
    )


def _classify(address: Address) -> str | None:
    for reason, applies in _CLASSES:
        if applies(address):
            return reason
    return None


def _translated_ipv4(address: Address) -> ipaddress.IPv4Address | None:
    if not isinstance(address, ipaddress.IPv6Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in _NAT64_PREFIX:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def _tunnelled_ipv4(address: Address) -> ipaddress.IPv4Address | None:
    if not isinstance(address, ipaddress.IPv6Address):
        return None
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        _server, client = address.teredo
        return client
    return None


def _describe(address: Address) -> str:
    embedded = _translated_ipv4(address) or _tunnelled_ipv4(address)
    return str(address) if embedded is None else f"{address} ({embedded})"


def _text_refusal(host: str, allowed: Sequence[Network]) -> str | None:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return "not an IP address"
    return refusal_reason(address, allowed)


def _treated_as_ip_literal(host: str) -> bool:
    # The same test as aiohttp.helpers.is_ip_address: such hosts never reach the resolver.
    return ":" in host or host.replace(".", "").isdigit()
