"""SSRF guard: webhook targets must not reach loopback, private, link-local, multicast or metadata addresses.

The check sits in the resolver the shared connector uses, so it applies to the very addresses
the connection is made to: a host name that resolves to a public address when the signal is
saved and to 127.0.0.1 at send time (DNS rebinding) is still refused. aiohttp does not call the
resolver for IP literals; those cannot rebind, and ``check_literal`` refuses them before sending.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from ipaddress import IPv4Address, IPv6Address

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver

from qhook.settings import Settings

IPAddress = IPv4Address | IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Cloud metadata services answer with credentials; named so the refusal says so.
METADATA_ADDRESSES = frozenset(
    {
        ipaddress.ip_address("169.254.169.254"),  # AWS, GCP, Azure, OpenStack, ...
        ipaddress.ip_address("fd00:ec2::254"),  # AWS over IPv6
        ipaddress.ip_address("169.254.170.2"),  # AWS ECS task credentials
        ipaddress.ip_address("100.100.100.200"),  # Alibaba Cloud
    }
)


class SsrfBlocked(OSError):
    """Every address of the target is refused; ``str()`` says which and why (no secrets in it)."""

    def __init__(self, host: str, reasons: list[str]) -> None:
        self.host = host
        self.reasons = reasons
        super().__init__(f"{host} is refused: " + "; ".join(reasons))


def parse_networks(text: str) -> tuple[IPNetwork, ...]:
    """``127.0.0.0/8,::1/128`` -> networks; ValueError naming the bad entry."""
    networks: list[IPNetwork] = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError as exc:
            raise ValueError(f"{item!r} is not a network") from exc
    return tuple(networks)


def _category(address: IPAddress) -> str | None:
    """Why an address is internal, or None when it is a public unicast address."""
    if address in METADATA_ADDRESSES:
        return "cloud metadata"
    if address.is_loopback:
        return "loopback"
    if address.is_unspecified:
        return "unspecified"
    if address.is_link_local:
        return "link-local"
    if address.is_multicast:
        return "multicast"
    if address.is_reserved:
        return "reserved"
    if address.is_private:
        return "private"
    if not address.is_global:  # e.g. 100.64.0.0/10 carrier-grade NAT
        return "not public"
    return None


def _embedded_v4(address: IPAddress) -> IPv4Address | None:
    """The IPv4 address an IPv6 address tunnels to (6to4, Teredo client), if any."""
    if isinstance(address, IPv4Address):
        return None
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    return None


class AddressPolicy:
    """Which addresses webhooks may connect to; the allowed networks are parsed once."""

    def __init__(self, allowed_networks: Iterable[IPNetwork] = ()) -> None:
        self.allowed_networks = tuple(allowed_networks)

    @classmethod
    def from_settings(cls, settings: Settings) -> AddressPolicy:
        return cls(parse_networks(settings.allowed_target_networks))

    def _allowed(self, address: IPAddress) -> bool:
        return any(address.version == net.version and address in net for net in self.allowed_networks)

    def refusal(self, address: str | IPAddress) -> str | None:
        """None when ``address`` may be connected to; otherwise why not, e.g. "127.0.0.1 is loopback"."""
        ip = ipaddress.ip_address(address.split("%", 1)[0] if isinstance(address, str) else address)
        shown = str(address)
        if isinstance(ip, IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped  # the connection goes to the IPv4 address
        if self._allowed(ip):
            return None
        category = _category(ip)
        if category is None:
            inner = _embedded_v4(ip)
            if inner is not None and not self._allowed(inner):
                inner_category = _category(inner)
                if inner_category is not None:
                    category = f"a tunnel to {inner} ({inner_category})"
        return None if category is None else f"{shown} is {category}"

    def check_literal(self, host: str) -> None:
        """Refuse an IP-literal host (aiohttp connects to those without asking the resolver)."""
        try:
            ip = ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
        except ValueError:
            return  # a name: the resolver checks what it resolves to
        reason = self.refusal(ip)
        if reason is not None:
            raise SsrfBlocked(host, [reason])


class GuardedResolver(AbstractResolver):
    """Resolves with the wrapped resolver and drops refused addresses; none left -> ``SsrfBlocked``."""

    def __init__(self, policy: AddressPolicy, inner: AbstractResolver | None = None) -> None:
        self.policy = policy
        self._inner = inner

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        if self._inner is None:
            self._inner = ThreadedResolver()  # needs the running loop, so made on first use
        results = await self._inner.resolve(host, port, family)
        allowed: list[ResolveResult] = []
        reasons: list[str] = []
        for result in results:
            reason = self.policy.refusal(result["host"])
            if reason is None:
                allowed.append(result)
            elif reason not in reasons:
                reasons.append(reason)
        if not allowed:
            raise SsrfBlocked(host, reasons or ["no addresses"])
        return allowed

    async def close(self) -> None:
        if self._inner is not None:
            await self._inner.close()
