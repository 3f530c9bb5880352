"""The client address: the peer, or behind trusted proxies the right-most untrusted hop.

The doors' use of it (throttling, log lines) is in test_login_guard.py.
"""

from __future__ import annotations

import pytest

from nestmtx_sidecar.security.client_address import parse_networks, resolve

TRUSTED = parse_networks("127.0.0.1, 10.0.0.0/8, fd00::/8")


@pytest.mark.parametrize("peer,forwarded_for,client", [
    ("192.0.2.1", "203.0.113.9", "192.0.2.1"),  # an untrusted peer's header is ignored
    ("127.0.0.1", "", "127.0.0.1"),
    ("127.0.0.1", "203.0.113.9", "203.0.113.9"),
    ("127.0.0.1", "6.6.6.6, 203.0.113.9, 10.0.0.2", "203.0.113.9"),  # right-most untrusted
    ("127.0.0.1", "10.0.0.3, 10.0.0.2", "10.0.0.3"),  # every hop ours: the farthest
    ("127.0.0.1", "203.0.113.9, not-an-ip", "127.0.0.1"),  # junk: the last hop we know
    ("::ffff:127.0.0.1", "2001:db8::5", "2001:db8::5"),  # IPv4 on a dual-stack socket
    ("fd00::1", " 203.0.113.9 ", "203.0.113.9"),
])
def test_the_client_address_is_the_right_most_untrusted_hop(
        peer: str, forwarded_for: str, client: str) -> None:
    assert resolve(peer, forwarded_for, TRUSTED) == client
