"""The SSRF guard: HTTP steps reach only public addresses unless an operator allow-lists others.

``vet_url`` parses a URL with the same parser that sends the request (httpx), resolves the host
through an injectable resolver, and refuses when *any* resolved address is not public. The caller
then connects to one of the vetted addresses (``Target.pinned_url``), never to a second lookup of
the name, so a DNS answer that changes between the check and the connect (rebinding) cannot slip
through. Redirects are vetted hop by hop by calling ``vet_url`` again.

Weird IPv4 spellings (``2130706433``, ``0x7f.1``, ``0177.0.0.1``, ``127.1``) are parsed here the
way ``inet_aton`` does, so they are refused even when the resolver would pass them through
untouched; the resolved addresses are checked as well, whatever the resolver returns.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import httpx

from dsl.errors import FlowError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Sequence[str]]
"""``resolver(host, port)`` returns the addresses of ``host`` as strings (any order)."""

ALLOWED_SCHEMES = ("http", "https")
_SHARED = ipaddress.ip_network("100.64.0.0/10")  # carrier-grade NAT, not covered by is_private
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_IPV4_COMPAT = ipaddress.ip_network("::/96")
# A host whose last label is numeric is meant as an IPv4 address (WHATWG URL rule); if it does not
# parse as one we refuse it rather than let a resolver interpret it some other way.
_NUMERIC_LABEL = re.compile(r"^(0[xX][0-9a-fA-F]*|[0-9]+)$")


class Refused(FlowError):
    """The URL may not be fetched; ``message`` says why and how to allow it, ``details`` the facts."""

    def __init__(self, message: str, **details: object) -> None:
        super().__init__(message)
        self.message = message
        self.details = dict(details)


@dataclass(frozen=True)
class Target:
    """A vetted URL and the address the request must connect to."""

    url: httpx.URL
    host: str
    port: int
    address: IPAddress

    @property
    def pinned_url(self) -> httpx.URL:
        """The URL with its host replaced by the vetted address (send with ``host_header``/SNI)."""
        return self.url.copy_with(host=str(self.address))

    @property
    def host_header(self) -> str:
        default = 443 if self.url.scheme == "https" else 80
        name = f"[{self.host}]" if ":" in self.host else self.host
        return name if self.port == default else f"{name}:{self.port}"


def system_resolver(host: str, port: int) -> list[str]:
    """Resolve with ``socket.getaddrinfo`` (the default resolver)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


def parse_loose_ipv4(host: str) -> ipaddress.IPv4Address | None:
    """Parse ``host`` as ``inet_aton`` would (1–4 parts, decimal, ``0x`` hex or ``0`` octal).

    Returns None when ``host`` is not numeric; raises ``ValueError`` when it is numeric but invalid.
    """
    labels = host.split(".")
    if labels and labels[-1] == "":  # a trailing dot is allowed in DNS names
        labels = labels[:-1]
    if not labels or not _NUMERIC_LABEL.match(labels[-1]):
        return None
    if len(labels) > 4:
        raise ValueError(f"{host!r} looks like an IPv4 address but has more than four parts")
    parts: list[int] = []
    for label in labels:
        if not _NUMERIC_LABEL.match(label):
            raise ValueError(f"{host!r} looks like an IPv4 address but {label!r} is not a number")
        if label[:2].lower() == "0x":
            parts.append(int(label[2:] or "0", 16))
        elif len(label) > 1 and label.startswith("0"):
            if not set(label) <= set("01234567"):
                raise ValueError(f"{host!r}: {label!r} is not an octal number")
            parts.append(int(label, 8))
        else:
            parts.append(int(label))
    # The last part fills all the bytes that the earlier parts did not name (127.1 = 127.0.0.1).
    last_bytes = 5 - len(parts)
    if any(part > 255 for part in parts[:-1]) or parts[-1] >= 256**last_bytes:
        raise ValueError(f"{host!r} looks like an IPv4 address but a part is out of range")
    value = 0
    for part in parts[:-1]:
        value = value * 256 + part
    value = value * 256**last_bytes + parts[-1]
    return ipaddress.IPv4Address(value)


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries (mapped, compatible, NAT64, 6to4, Teredo), if any."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if address in _NAT64 or (address in _IPV4_COMPAT and int(address) > 1):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def non_public_reason(address: IPAddress) -> str | None:
    """Why ``address`` is not a public unicast address, or None when it is."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.scope_id:
            return "scoped (link-local)"
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            inner = non_public_reason(embedded)
            if inner is not None:
                return f"an IPv6 form of {embedded}, which is {inner}"
    # Order matters only for the message: the most specific reason first.
    checks = (
        (address.is_unspecified, "unspecified"),
        (address.is_loopback, "loopback"),
        (address.is_link_local, "link-local (cloud metadata lives here)"),
        (address.is_multicast, "multicast"),
        (isinstance(address, ipaddress.IPv4Address) and address in _SHARED, "shared address space"),
        (address.is_private, "private"),
        (address.is_reserved, "reserved"),
        (not address.is_global, "not globally routable"),
    )
    for refused, reason in checks:
        if refused:
            return reason
    return None


def _allowed_by_name(host: str, allowlist: Iterable[str]) -> bool:
    host = host.rstrip(".").lower()
    return any(entry.rstrip(".").lower() == host for entry in allowlist if "/" not in entry)


def _allowed_by_address(address: IPAddress, allowlist: Iterable[str]) -> bool:
    for entry in allowlist:
        try:
            network = ipaddress.ip_network(entry.strip("[]"), strict=False)
        except ValueError:
            continue  # a host name entry
        if address.version == network.version and address in network:
            return True
    return False


def _parse_address(text: str) -> IPAddress:
    # getaddrinfo returns IPv6 link-local addresses with a zone ("fe80::1%eth0"); keep the zone so
    # the address is refused as scoped.
    return ipaddress.ip_address(text)


def vet_url(
    url: str | httpx.URL,
    allowlist: Sequence[str] = (),
    resolver: Resolver = system_resolver,
) -> Target:
    """Check that ``url`` may be fetched and pick the address to connect to.

    Parameters: ``allowlist`` holds host names and CIDRs (``FLOW_HTTP_ALLOWLIST``); ``resolver``
    maps a host and port to addresses. Returns a ``Target``. Raises ``Refused`` with a message that
    names the host, the address and how to allow it.
    """
    try:
        parsed = url if isinstance(url, httpx.URL) else httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError) as exc:
        raise Refused(f"the URL {str(url)!r} is not valid: {exc}", url=str(url)) from None
    if parsed.scheme not in ALLOWED_SCHEMES:
        raise Refused(
            f"the URL scheme {parsed.scheme or '(none)'!r} is not allowed; use http or https",
            url=str(url),
        )
    if parsed.userinfo:
        raise Refused(
            "the URL carries credentials (user:password@); send them in a header from a secret",
            host=parsed.host,
        )
    # raw_host is the ASCII (IDNA) form: the one DNS and the Host header see.
    host = parsed.raw_host.decode("ascii")
    if not host:
        raise Refused(f"the URL {str(url)!r} has no host", url=str(url))
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    allowed_name = _allowed_by_name(host, allowlist)

    # A literal address (in any spelling) is never handed to the resolver.
    try:
        literal: IPAddress | None = (
            _parse_address(host) if ":" in host else parse_loose_ipv4(host)
        )
    except ValueError as exc:
        raise Refused(f"the host {host!r} is not a valid address: {exc}", host=host) from None
    if literal is not None:
        addresses: list[IPAddress] = [literal]
    else:
        try:
            resolved = list(resolver(host, port))
        except (OSError, UnicodeError) as exc:
            raise Refused(f"the host {host!r} could not be resolved: {exc}", host=host, dns=True) from None
        try:
            addresses = [_parse_address(text) for text in resolved]
        except ValueError as exc:
            raise Refused(f"the host {host!r} resolved to a bad address: {exc}", host=host) from None
        if not addresses:
            raise Refused(f"the host {host!r} has no address", host=host, dns=True)

    if not allowed_name:
        for address in addresses:
            reason = non_public_reason(address)
            if reason is not None and not _allowed_by_address(address, allowlist):
                raise Refused(
                    f"refusing to connect to {host!r} at {address}: the address is {reason}; "
                    f"to allow it, add the host or the address to FLOW_HTTP_ALLOWLIST "
                    f"(e.g. FLOW_HTTP_ALLOWLIST={host})",
                    host=host,
                    address=str(address),
                    reason=reason,
                )
    return Target(url=parsed, host=host, port=port, address=addresses[0])
