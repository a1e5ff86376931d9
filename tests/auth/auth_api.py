"""Helpers that speak the auth API the way a client would (imported by the auth tests)."""

from __future__ import annotations

import uuid
from typing import Any

import sqlalchemy
from falcon import testing

from auth_service.db.models import User

PASSWORD = "correct horse battery"


class Api:
    """Small helpers that speak the API the way a client would."""

    def __init__(self, client: testing.TestClient) -> None:
        self.client = client

    def register(self, email: str, password: str = PASSWORD, **extra: Any) -> testing.Result:
        return self.client.simulate_post(
            "/api/v1/auth/register", json={"email": email, "password": password, **extra}
        )

    def login(self, email: str, password: str = PASSWORD, **kwargs: Any) -> testing.Result:
        return self.client.simulate_post(
            "/api/v1/auth/login", json={"email": email, "password": password}, **kwargs
        )

    def user(self, email: str, password: str = PASSWORD) -> dict[str, Any]:
        """Register and log in; the user with its tokens."""
        registered = self.register(email, password)
        assert registered.status_code == 201, registered.text
        tokens = self.login(email, password)
        assert tokens.status_code == 200, tokens.text
        return {**registered.json, **tokens.json}

    def admin(self, database_url: str, email: str = "admin@example.com") -> dict[str, Any]:
        """A logged-in superuser (made one in the database, as create-admin would)."""
        made = self.register(email)
        assert made.status_code == 201, made.text
        set_user_flags(database_url, made.json["id"], is_superuser=True)
        tokens = self.login(email)
        assert tokens.status_code == 200, tokens.text
        return {**made.json, **tokens.json}


def set_user_flags(database_url: str, user_id: str, **flags: bool) -> None:
    """Change a user's flags straight in the database (test set-up only)."""
    engine = sqlalchemy.create_engine(database_url)
    with engine.begin() as connection:
        connection.execute(
            sqlalchemy.update(User).where(User.id == uuid.UUID(user_id)).values(**flags)
        )
    engine.dispose()


def bearer(token: str) -> dict[str, str]:
    """The Authorization header for an access token."""
    return {"Authorization": f"Bearer {token}"}
