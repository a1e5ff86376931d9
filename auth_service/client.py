"""Who the client is: its address (proxy-aware) and user agent."""

from __future__ import annotations

from collections.abc import Sequence

import falcon

from auth_service.services.audit import ClientInfo
from authgate_common.client_address import client_address
from authgate_common.env import Network


def client_info(req: falcon.Request) -> ClientInfo:
    """The client as recorded on its session; its address was settled by RequestContext."""
    user_agent = req.user_agent[:512] if req.user_agent else None
    return ClientInfo(user_agent=user_agent, ip_address=req.context.client_ip)


def client_ip(req: falcon.Request, trusted_proxies: Sequence[Network]) -> str | None:
    """The socket peer, or the client behind trusted proxies (authgate_common's one rule)."""
    peer = req.remote_addr
    if not peer:
        return None
    return client_address(peer, req.get_header("X-Forwarded-For"), trusted_proxies)
