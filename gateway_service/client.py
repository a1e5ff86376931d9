"""Who the client is: its address, believing X-Forwarded-For only from trusted proxies."""

from __future__ import annotations

import falcon

from authgate_common.client_address import client_address, is_trusted
from gateway_service.settings import Settings


class ClientAddress:
    """Finds the client IP and the X-Forwarded-* values, believing only trusted proxies."""

    def __init__(self, settings: Settings) -> None:
        """Keep the trusted networks."""
        self._trusted = settings.trusted_proxies

    def client_ip(self, req: falcon.Request) -> str:
        """The client's address alone (for the access log of the gateway's own endpoints)."""
        return self.forwarded(req)[0]

    def forwarded(self, req: falcon.Request) -> tuple[str, dict[str, str]]:
        """Return (client ip, X-Forwarded-* headers to send upstream)."""
        peer = req.remote_addr or "unknown"
        env = req.env
        if is_trusted(peer, self._trusted):
            forwarded_for = env.get("HTTP_X_FORWARDED_FOR", "")
            chain = [a.strip() for a in forwarded_for.split(",") if a.strip()]
            return client_address(peer, forwarded_for, self._trusted), {
                "X-Forwarded-For": ", ".join([*chain, peer]),
                "X-Forwarded-Proto": env.get("HTTP_X_FORWARDED_PROTO") or req.scheme,
                "X-Forwarded-Host": env.get("HTTP_X_FORWARDED_HOST") or req.host,
            }
        return peer, {
            "X-Forwarded-For": peer,
            "X-Forwarded-Proto": req.scheme,
            "X-Forwarded-Host": env.get("HTTP_HOST") or req.host,
        }
