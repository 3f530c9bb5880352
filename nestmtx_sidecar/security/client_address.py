"""Who is asking: the client's IP address, read through the reverse proxies we trust."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from contextvars import ContextVar
from typing import Any

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
UNKNOWN = "unknown"

# Set by the dispatcher around each request it runs, for the modules that need it (log-in
# throttling): module commands take (caller, entity, payload) alike on every door.
CURRENT: ContextVar[str] = ContextVar("client_address", default=UNKNOWN)


def parse_networks(text: str) -> tuple[Network, ...]:
    """Comma-separated addresses and CIDRs; ValueError names the first bad one."""
    networks = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ValueError(f"{item!r} is not an IP address or CIDR") from None
    return tuple(networks)


def from_scope(scope: Any, trusted: Sequence[Network]) -> str:
    """The client address of an ASGI connection (HTTP or websocket)."""
    client = scope.get("client")
    peer = client[0] if client else UNKNOWN
    forwarded = ",".join(value.decode("latin-1") for name, value in scope.get("headers", ())
                         if name.lower() == b"x-forwarded-for")
    return resolve(peer, forwarded, trusted)


def resolve(peer: str, forwarded_for: str, trusted: Sequence[Network]) -> str:
    """`peer`, or when it is a trusted proxy, the right-most untrusted X-Forwarded-For entry.

    Proxies append the address they saw, so entries right of the first untrusted one were
    written by our proxies and those left of it by whoever sent the request: only the
    right-most untrusted one cannot be forged.
    """
    address = _ip(peer)
    if address is None or not _trusted(address, trusted):
        return str(address or peer)
    for entry in reversed(forwarded_for.split(",")):
        hop = _ip(entry.strip())
        if hop is None:  # garbage from a trusted proxy: the last hop we know is all we have
            break
        address = hop
        if not _trusted(hop, trusted):
            break
    return str(address)


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    # A dual-stack socket shows IPv4 clients as ::ffff:a.b.c.d; they are the IPv4 address.
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped
    return address


def _trusted(address: ipaddress.IPv4Address | ipaddress.IPv6Address,
             trusted: Sequence[Network]) -> bool:
    return any(address in network for network in trusted)
