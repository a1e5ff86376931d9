"""Who the client is: its address (proxy-aware) and user agent."""

from __future__ import annotations

import ipaddress
from functools import lru_cache

import falcon

from auth_service.services.sessions import ClientInfo


def client_info(req: falcon.Request) -> ClientInfo:
    """The client as recorded on its session; its address was settled by RequestContext."""
    user_agent = req.user_agent[:512] if req.user_agent else None
    return ClientInfo(user_agent=user_agent, ip_address=req.context.client_ip)


def client_ip(req: falcon.Request, trusted_proxies: tuple[str, ...]) -> str | None:
    """The socket peer, or the first untrusted hop of X-Forwarded-For behind trusted proxies."""
    peer = req.remote_addr
    if not peer or not _is_trusted(peer, trusted_proxies):
        return peer
    forwarded = req.get_header("X-Forwarded-For") or ""
    for hop in reversed([part.strip() for part in forwarded.split(",") if part.strip()]):
        if not _is_ip(hop):
            break  # NOTE: a malformed hop ends what we can believe.
        if not _is_trusted(hop, trusted_proxies):
            return hop
    return peer


def _is_ip(address: str) -> bool:
    try:
        ipaddress.ip_address(address)
    except ValueError:
        return False
    return True


def _is_trusted(address: str, trusted_proxies: tuple[str, ...]) -> bool:
    networks = _networks(trusted_proxies)
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)


@lru_cache(maxsize=8)
def _networks(
    trusted_proxies: tuple[str, ...],
) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(cidr, strict=False) for cidr in trusted_proxies)
