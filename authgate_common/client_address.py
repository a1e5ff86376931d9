"""Who the client is, when proxies stand in between: one rule for both services.

The socket peer is the client unless it is a trusted proxy. Then `X-Forwarded-For` is
read from the right (the hop nearest to us) past every trusted proxy; the first address
that is not trusted is the client. A malformed entry ends what can be believed: the
client is then the last trusted hop that handed it to us, never the malformed text and
never an address further left, which anyone could have written.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from authgate_common.env import Network


def is_trusted(address: str, trusted: Sequence[Network]) -> bool:
    """Whether `address` is an IP inside one of the trusted networks."""
    if not trusted:
        return False
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in trusted)


def client_address(peer: str, forwarded_for: str | None, trusted: Sequence[Network]) -> str:
    """The client's address, given the socket peer and the X-Forwarded-For header."""
    if not forwarded_for or not is_trusted(peer, trusted):
        return peer
    client = peer
    for hop in reversed(forwarded_for.split(",")):
        hop = hop.strip()
        if not hop:
            continue
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            return client  # SECURITY: a malformed hop ends the chain we believe.
        client = hop
        if not is_trusted(hop, trusted):
            return client
    return client
