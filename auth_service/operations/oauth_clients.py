"""Responders of the `oauth-clients` tag: the admin API of the OAuth client registry."""

from __future__ import annotations

from typing import Any

import falcon

from auth_service.client import client_info
from auth_service.operations.representations import TOKEN_RESPONSE_HEADERS, oauth_client_json
from auth_service.services.oauth_clients import ClientMetadata, IssuedClient, OAuthClientService

CLIENTS = "/api/v1/oauth-clients"


class OAuthClientOperations:
    """One responder per operationId of /api/v1/oauth-clients."""

    def __init__(self, clients: OAuthClientService) -> None:
        self._clients = clients

    def list_oauth_clients(self, req: falcon.Request, resp: falcon.Response) -> None:
        """GET /api/v1/oauth-clients."""
        offset, limit = req.context.query["offset"], req.context.query["limit"]
        clients, total = self._clients.list_clients(req.context.principal, offset, limit)
        resp.media = {
            "items": [oauth_client_json(client) for client in clients],
            "total": total,
            "offset": offset,
            "limit": limit,
        }

    def create_oauth_client(self, req: falcon.Request, resp: falcon.Response) -> None:
        """POST /api/v1/oauth-clients."""
        body = req.context.body
        issued = self._clients.create_client(
            req.context.principal, body["client_type"], _metadata(body), client_info(req)
        )
        resp.status = falcon.HTTP_201
        resp.location = f"{CLIENTS}/{issued.client.client_id}"
        _send_secret_once(resp, issued, oauth_client_json(issued.client))

    def get_oauth_client(self, req: falcon.Request, resp: falcon.Response, client_id: str) -> None:
        """GET /api/v1/oauth-clients/{client_id}."""
        resp.media = oauth_client_json(self._clients.get_client(req.context.principal, client_id))

    def replace_oauth_client(
        self, req: falcon.Request, resp: falcon.Response, client_id: str
    ) -> None:
        """PUT /api/v1/oauth-clients/{client_id}."""
        client = self._clients.replace_client(
            req.context.principal, client_id, _metadata(req.context.body), client_info(req)
        )
        resp.media = oauth_client_json(client)

    def delete_oauth_client(
        self, req: falcon.Request, resp: falcon.Response, client_id: str
    ) -> None:
        """DELETE /api/v1/oauth-clients/{client_id}."""
        self._clients.delete_client(req.context.principal, client_id, client_info(req))
        resp.status = falcon.HTTP_204

    def rotate_oauth_client_secret(
        self, req: falcon.Request, resp: falcon.Response, client_id: str
    ) -> None:
        """POST /api/v1/oauth-clients/{client_id}/secret."""
        issued = self._clients.rotate_secret(req.context.principal, client_id, client_info(req))
        _send_secret_once(resp, issued, {"client_id": issued.client.client_id})


def _metadata(body: dict[str, Any]) -> ClientMetadata:
    return ClientMetadata(
        name=body["name"],
        redirect_uris=body.get("redirect_uris", []),
        grant_types=body["grant_types"],
        scopes=body.get("scopes", []),
    )


def _send_secret_once(resp: falcon.Response, issued: IssuedClient, body: dict[str, Any]) -> None:
    if issued.client_secret is not None:
        body["client_secret"] = issued.client_secret
    # SECURITY: the secret is in the body; no cache may keep it (like a token response).
    resp.set_headers(TOKEN_RESPONSE_HEADERS)
    resp.media = body
