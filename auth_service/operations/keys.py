"""Responders of the `keys` tag: the public keys that verify our access tokens."""

from __future__ import annotations

import falcon

from auth_service.security.tokens import KeyRing


class KeyOperations:
    """Publishes the JWKS (current and previous keys, so rotation logs nobody out)."""

    def __init__(self, key_ring: KeyRing) -> None:
        self._jwks = key_ring.jwks()

    def get_jwks(self, req: falcon.Request, resp: falcon.Response) -> None:
        """GET /.well-known/jwks.json."""
        # NOTE: short caching: verifiers refetch on an unknown kid anyway.
        resp.cache_control = ["public", "max-age=300"]
        resp.media = self._jwks
