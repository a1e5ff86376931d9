"""authgate_common.client_address: one rule for X-Forwarded-For in both services."""

from __future__ import annotations

import ipaddress

import pytest

from authgate_common.client_address import client_address, is_trusted

TRUSTED = (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("::1/128"))


@pytest.mark.parametrize(
    ("peer", "forwarded", "expected"),
    [
        # An untrusted peer is the client, whatever it claims.
        ("203.0.113.9", "198.51.100.1", "203.0.113.9"),
        # A trusted peer without a header is the client.
        ("10.0.0.2", None, "10.0.0.2"),
        ("10.0.0.2", "", "10.0.0.2"),
        # Behind a trusted proxy: the nearest untrusted hop.
        ("10.0.0.2", "198.51.100.1", "198.51.100.1"),
        ("10.0.0.2", "192.0.2.7, 198.51.100.1, 10.0.0.3", "198.51.100.1"),
        ("::1", "2001:db8::5", "2001:db8::5"),
        # Only trusted hops: the leftmost one, the furthest we can see.
        ("10.0.0.2", "10.0.0.4, 10.0.0.3", "10.0.0.4"),
        # A malformed hop ends the chain: the trusted hop that handed it over is the client.
        ("10.0.0.2", "198.51.100.1, not-an-ip", "10.0.0.2"),
        ("10.0.0.2", "198.51.100.1, garbage, 10.0.0.3", "10.0.0.3"),
        ("10.0.0.2", "198.51.100.1:443", "10.0.0.2"),
        # Blank entries are skipped, not malformed.
        ("10.0.0.2", "198.51.100.1, , ", "198.51.100.1"),
    ],
)
def test_client_address(peer: str, forwarded: str | None, expected: str) -> None:
    assert client_address(peer, forwarded, TRUSTED) == expected


def test_nobody_is_trusted_by_default() -> None:
    assert client_address("10.0.0.2", "198.51.100.1", ()) == "10.0.0.2"
    assert not is_trusted("10.0.0.2", ())
    assert not is_trusted("not-an-ip", TRUSTED)
