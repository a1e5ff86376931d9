"""Responders of the `users` tag: the admin API and self-service profile."""

from __future__ import annotations

import uuid

import falcon

from auth_service.client import client_info
from auth_service.operations.representations import user_json
from auth_service.services.accounts import AccountService, NewUser


class UserOperations:
    """One responder per operationId of /api/v1/users."""

    def __init__(self, accounts: AccountService) -> None:
        self._accounts = accounts

    def list_users(self, req: falcon.Request, resp: falcon.Response) -> None:
        """GET /api/v1/users."""
        offset, limit = req.context.query["offset"], req.context.query["limit"]
        users, total = self._accounts.list_users(req.context.principal, offset, limit)
        resp.media = {
            "items": [user_json(user) for user in users],
            "total": total,
            "offset": offset,
            "limit": limit,
        }

    def create_user(self, req: falcon.Request, resp: falcon.Response) -> None:
        """POST /api/v1/users."""
        user = self._accounts.create_user(
            req.context.principal, NewUser(**req.context.body), client_info(req)
        )
        resp.status = falcon.HTTP_201
        resp.location = f"/api/v1/users/{user.id}"
        resp.media = user_json(user)

    def get_user(self, req: falcon.Request, resp: falcon.Response, user_id: str) -> None:
        """GET /api/v1/users/{user_id}."""
        user = self._accounts.get_user(req.context.principal, uuid.UUID(user_id))
        resp.media = user_json(user)

    def update_user(self, req: falcon.Request, resp: falcon.Response, user_id: str) -> None:
        """PUT /api/v1/users/{user_id}."""
        user = self._accounts.update_user(
            req.context.principal, uuid.UUID(user_id), req.context.body or {}, client_info(req)
        )
        resp.media = user_json(user)

    def delete_user(self, req: falcon.Request, resp: falcon.Response, user_id: str) -> None:
        """DELETE /api/v1/users/{user_id}."""
        self._accounts.delete_user(req.context.principal, uuid.UUID(user_id), client_info(req))
        resp.status = falcon.HTTP_204

    def change_password(self, req: falcon.Request, resp: falcon.Response) -> None:
        """PUT /api/v1/users/me/password."""
        body = req.context.body
        self._accounts.change_password(
            req.context.principal,
            uuid.UUID(req.context.session_id),
            body["current_password"],
            body["new_password"],
            client_info(req),
        )
        resp.status = falcon.HTTP_204

    def unlock_user(self, req: falcon.Request, resp: falcon.Response, user_id: str) -> None:
        """POST /api/v1/users/{user_id}/unlock."""
        self._accounts.unlock(req.context.principal, uuid.UUID(user_id), client_info(req))
        resp.status = falcon.HTTP_204
