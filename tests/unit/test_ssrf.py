"""The SSRF address policy and the resolver that enforces it."""

from __future__ import annotations

import socket

import pytest
from aiohttp.abc import AbstractResolver, ResolveResult

from qhook.delivery.ssrf import AddressPolicy, GuardedResolver, SsrfBlocked, parse_networks


@pytest.mark.parametrize(
    ("address", "category"),
    [
        ("127.0.0.1", "loopback"),
        ("127.8.9.10", "loopback"),
        ("::1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("fd12:3456::1", "private"),
        ("169.254.10.10", "link-local"),
        ("fe80::1", "link-local"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("240.0.0.1", "reserved"),
        ("100.64.0.1", "not public"),
        ("169.254.169.254", "cloud metadata"),
        ("fd00:ec2::254", "cloud metadata"),
        ("::ffff:127.0.0.1", "loopback"),
        ("2002:7f00:1::", "a tunnel to 127.0.0.1 (loopback)"),
        ("2002:a00:1::", "a tunnel to 10.0.0.1 (private)"),
    ],
)
def test_internal_addresses_are_refused(address: str, category: str) -> None:
    assert AddressPolicy().refusal(address) == f"{address} is {category}"


@pytest.mark.parametrize("address", ["8.8.8.8", "93.184.216.34", "2606:4700::1111", "2002:808:808::"])
def test_public_addresses_pass(address: str) -> None:
    assert AddressPolicy().refusal(address) is None


def test_allowed_networks_exempt_addresses() -> None:
    policy = AddressPolicy(parse_networks(" 127.0.0.0/8 , ::1/128,10.0.0.0/24"))
    assert policy.refusal("127.0.0.1") is None
    assert policy.refusal("::1") is None
    assert policy.refusal("10.0.0.200") is None
    assert policy.refusal("10.0.1.1") == "10.0.1.1 is private"
    assert policy.refusal("169.254.169.254") == "169.254.169.254 is cloud metadata"


def test_parse_networks_errors_name_the_entry() -> None:
    assert parse_networks("") == ()
    with pytest.raises(ValueError, match="'nonsense'"):
        parse_networks("127.0.0.0/8,nonsense")


def test_check_literal() -> None:
    policy = AddressPolicy()
    with pytest.raises(SsrfBlocked, match=r"127\.0\.0\.1 is loopback"):
        policy.check_literal("127.0.0.1")
    with pytest.raises(SsrfBlocked, match="::1 is loopback"):
        policy.check_literal("[::1]")
    policy.check_literal("8.8.8.8")
    policy.check_literal("erp.example.com")  # names are the resolver's job


class FakeResolver(AbstractResolver):
    def __init__(self, answers: list[list[str]]) -> None:
        self.answers = answers
        self.closed = False

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        addresses = self.answers.pop(0)
        return [
            ResolveResult(
                hostname=host, host=a, port=port, family=socket.AF_INET, proto=0, flags=socket.AI_NUMERICHOST
            )
            for a in addresses
        ]

    async def close(self) -> None:
        self.closed = True


async def test_resolver_drops_refused_addresses() -> None:
    resolver = GuardedResolver(AddressPolicy(), FakeResolver([["10.0.0.1", "93.184.216.34"]]))
    results = await resolver.resolve("mixed.example.com", 443)
    assert [r["host"] for r in results] == ["93.184.216.34"]


async def test_resolver_refuses_rebinding_to_loopback() -> None:
    # First lookup public, second (at send time) loopback: every lookup is checked.
    inner = FakeResolver([["93.184.216.34"], ["127.0.0.1"]])
    resolver = GuardedResolver(AddressPolicy(), inner)
    await resolver.resolve("rebind.example.com", 443)
    with pytest.raises(SsrfBlocked) as info:
        await resolver.resolve("rebind.example.com", 443)
    assert str(info.value) == "rebind.example.com is refused: 127.0.0.1 is loopback"
    await resolver.close()
    assert inner.closed


async def test_resolver_uses_real_dns_for_localhost() -> None:
    with pytest.raises(SsrfBlocked, match="loopback"):
        await GuardedResolver(AddressPolicy()).resolve("localhost", 80)
    allowed = GuardedResolver(AddressPolicy(parse_networks("127.0.0.0/8,::1/128")))
    assert {r["host"] for r in await allowed.resolve("localhost", 80)} <= {"127.0.0.1", "::1"}
