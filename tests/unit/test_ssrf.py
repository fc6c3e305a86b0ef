"""The SSRF guard. Nothing here connects anywhere: resolvers are injected, refusals come first."""

from __future__ import annotations

import ipaddress

import pytest

from workers.ssrf import Refused, non_public_reason, parse_loose_ipv4, vet_url


def no_dns(host: str, port: int) -> list[str]:
    raise AssertionError(f"the guard must not resolve {host!r}")


def resolving_to(*addresses: str):
    calls: list[str] = []

    def resolver(host: str, port: int) -> list[str]:
        calls.append(host)
        return list(addresses)

    resolver.calls = calls  # type: ignore[attr-defined]
    return resolver


PUBLIC = resolving_to("93.184.216.34")


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/",
        "http://2130706433/",  # decimal
        "http://0x7f000001/",  # hex, one part
        "http://0x7f.1/",  # hex, short
        "http://127.1/",  # short
        "http://127.0.1/",
        "http://0x7f.0x0.0x0.0x1/",
        "http://017700000001/",  # octal, one part
        "http://[::1]/",
        "http://[::ffff:127.0.0.1]/",  # IPv4-mapped
        "http://[::ffff:7f00:1]/",
        "http://[::127.0.0.1]/",  # IPv4-compatible (deprecated)
        "http://[64:ff9b::a00:1]/",  # NAT64 of 10.0.0.1
        "http://[2002:a9fe:a9fe::]/",  # 6to4 of 169.254.169.254
        "http://169.254.169.254/latest/meta-data/",
        "http://[fe80::1]/",
        "http://[fe80::1%25eth0]/",
        "http://10.1.2.3/",
        "http://172.16.0.1/",
        "http://192.168.1.1/",
        "http://100.64.0.1/",  # shared address space
        "http://0.0.0.0/",
        "http://0/",
        "http://[::]/",
        "http://224.0.0.1/",
        "http://[ff02::1]/",
        "http://240.0.0.1/",
        "http://255.255.255.255/",
        "http://[fc00::1]/",
    ],
)
def test_refuses_non_public_literals_in_every_spelling(url: str) -> None:
    with pytest.raises(Refused) as caught:
        vet_url(url, resolver=no_dns)
    assert "FLOW_HTTP_ALLOWLIST" in caught.value.message or "not a valid" in caught.value.message


@pytest.mark.parametrize("url", ["http://0177.0.0.1/", "http://1.2.3.4.5/", "http://08.1.1.1/", "http://127.0.0.256/"])
def test_refuses_malformed_numeric_hosts_without_resolving(url: str) -> None:
    with pytest.raises(Refused):
        vet_url(url, resolver=no_dns)


@pytest.mark.parametrize(
    ("text", "address"),
    [
        ("2130706433", "127.0.0.1"),
        ("0x7f.1", "127.0.0.1"),
        ("0177.0.0.1", "127.0.0.1"),
        ("127.1", "127.0.0.1"),
        ("0x7f.0.1", "127.0.0.1"),
        ("0", "0.0.0.0"),
        ("169.254.43518", "169.254.169.254"),
        ("93.184.216.34", "93.184.216.34"),
    ],
)
def test_parse_loose_ipv4_reads_every_inet_aton_spelling(text: str, address: str) -> None:
    assert parse_loose_ipv4(text) == ipaddress.IPv4Address(address)


def test_parse_loose_ipv4_leaves_names_alone() -> None:
    assert parse_loose_ipv4("example.com") is None
    assert parse_loose_ipv4("1.example") is None


@pytest.mark.parametrize("address", ["127.0.0.1", "10.0.0.7", "169.254.169.254", "::1", "::ffff:10.0.0.1", "0.0.0.0"])
def test_refuses_a_public_looking_name_that_resolves_inside(address: str) -> None:
    with pytest.raises(Refused) as caught:
        vet_url("https://api.example.com/x", resolver=resolving_to(address))
    refusal = caught.value
    assert refusal.details["host"] == "api.example.com"
    assert refusal.details["address"] == str(ipaddress.ip_address(address))
    assert "api.example.com" in refusal.message and "FLOW_HTTP_ALLOWLIST" in refusal.message


def test_refuses_when_any_resolved_address_is_inside() -> None:
    with pytest.raises(Refused):
        vet_url("http://mixed.example/", resolver=resolving_to("93.184.216.34", "127.0.0.1"))


def test_accepts_public_names_and_pins_the_vetted_address() -> None:
    target = vet_url("https://api.example.com:8443/v1?q=1", resolver=PUBLIC)
    assert str(target.address) == "93.184.216.34"
    assert str(target.pinned_url) == "https://93.184.216.34:8443/v1?q=1"
    assert target.host_header == "api.example.com:8443"


def test_accepts_public_ipv6() -> None:
    target = vet_url("http://[2606:4700:4700::1111]/", resolver=no_dns)
    assert target.pinned_url.host == "2606:4700:4700::1111"


def test_resolver_sees_the_ascii_host() -> None:
    resolver = resolving_to("93.184.216.34")
    vet_url("http://bücher.example/", resolver=resolver)
    assert resolver.calls == ["xn--bcher-kva.example"]  # type: ignore[attr-defined]


def test_allowlist_by_host_name() -> None:
    target = vet_url("http://internal.example/", ["internal.example"], resolving_to("10.0.0.5"))
    assert str(target.address) == "10.0.0.5"
    with pytest.raises(Refused):
        vet_url("http://other.example/", ["internal.example"], resolving_to("10.0.0.5"))


def test_allowlist_by_cidr() -> None:
    assert vet_url("http://svc.example/", ["10.0.0.0/8"], resolving_to("10.2.3.4")).address
    assert vet_url("http://127.0.0.1:8080/", ["127.0.0.1/32"], no_dns).port == 8080
    with pytest.raises(Refused):
        vet_url("http://svc.example/", ["10.0.0.0/8"], resolving_to("192.168.0.1"))


@pytest.mark.parametrize(
    "url", ["file:///etc/passwd", "gopher://example.com/_x", "ftp://example.com/", "javascript:alert(1)", "//example.com/"]
)
def test_refuses_other_schemes(url: str) -> None:
    with pytest.raises(Refused, match="scheme"):
        vet_url(url, resolver=no_dns)


@pytest.mark.parametrize("url", ["http://user:pw@example.com/", "http://user@example.com/", "http://:pw@example.com/"])
def test_refuses_credentials_in_the_url(url: str) -> None:
    with pytest.raises(Refused, match="credentials"):
        vet_url(url, resolver=no_dns)


def test_refuses_empty_host() -> None:
    with pytest.raises(Refused, match="no host"):
        vet_url("http:///path", resolver=no_dns)


def test_dns_failure_is_marked() -> None:
    def failing(host: str, port: int) -> list[str]:
        raise OSError("Name or service not known")

    with pytest.raises(Refused) as caught:
        vet_url("http://nowhere.example/", resolver=failing)
    assert caught.value.details["dns"] is True


def test_non_public_reason_names_the_range() -> None:
    assert non_public_reason(ipaddress.ip_address("169.254.169.254")).startswith("link-local")
    assert "127.0.0.1" in non_public_reason(ipaddress.ip_address("::ffff:127.0.0.1"))
    assert non_public_reason(ipaddress.ip_address("8.8.8.8")) is None
