"""Drill 7: the clock edges of tokens, at both services.

An access token is accepted up to its `exp` and refused one second after it, refused
before its `nbf`; a refresh token is refused at the very instant it expires. The gateway
runs with no leeway here so that its edges are the token's own.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import sqlalchemy
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jose import jwt
from reliability_support import (
    PrivatePostgres,
    PrivateRedis,
    record,
    register_and_login,
    session,
    start_stack,
)


def wait_until(instant: float) -> None:
    time.sleep(max(0.0, instant - time.time()))


def test_token_clock_edges(
    tmp_path: Path, private_postgres: PrivatePostgres, private_redis: PrivateRedis
) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    key_file = tmp_path / "signing.pem"
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    stack = start_stack(
        tmp_path,
        private_postgres.url,
        private_redis.url,
        auth_env={"JWT_PRIVATE_KEY_FILE": str(key_file)},
        gateway_env={"GATEWAY_JWT_LEEWAY_SECONDS": "0"},
    )
    db = sqlalchemy.create_engine(private_postgres.url)
    try:
        pair = register_and_login(stack.api, "clock@example.com")
        issued = jwt.get_unverified_claims(pair["access_token"])
        kid = jwt.get_unverified_header(pair["access_token"])["kid"]

        def token(**times: int) -> str:
            now = int(time.time())
            claims = {**issued, "iat": now, "nbf": now, "jti": uuid.uuid4().hex, **times}
            return jwt.encode(claims, key, algorithm="RS256", headers={"kid": kid})

        def status(access_token: str) -> tuple[int, int]:
            """(through the gateway, at the auth service directly)."""
            headers = {"Authorization": f"Bearer {access_token}"}
            with session() as client:
                via = client.get(f"{stack.api}/auth/me", headers=headers, timeout=10)
                direct = client.get(f"{stack.auth.url}/api/v1/auth/me", headers=headers, timeout=10)
            return via.status_code, direct.status_code

        now = int(time.time())
        expiring = token(exp=now + 3)
        wait_until(now + 2)  # one second before exp
        before_exp = status(expiring)
        wait_until(now + 4)  # one second after exp
        after_exp = status(expiring)
        assert before_exp == (200, 200), before_exp
        assert after_exp == (401, 401), after_exp

        now = int(time.time())
        early = token(nbf=now + 3, exp=now + 600)
        before_nbf = status(early)
        wait_until(now + 3.5)
        after_nbf = status(early)
        assert before_nbf == (401, 401), before_nbf
        assert after_nbf == (200, 200), after_nbf

        # A refresh token whose expiry is this very instant is expired (expires_at <= now).
        stale = register_and_login(stack.api, "clock2@example.com")["refresh_token"]
        fresh = register_and_login(stack.api, "clock3@example.com")["refresh_token"]
        with db.begin() as connection:
            for email, offset in (
                ("clock2@example.com", "0 seconds"),
                ("clock3@example.com", "5 seconds"),
            ):
                connection.execute(
                    sqlalchemy.text(
                        "UPDATE refresh_tokens SET expires_at = now() + CAST(:offset AS interval) "
                        "WHERE user_id = (SELECT id FROM users WHERE email = :email)"
                    ),
                    {"offset": offset, "email": email},
                )
        with session() as client:
            at_expiry = client.post(
                f"{stack.api}/auth/refresh", json={"refresh_token": stale}, timeout=10
            ).status_code
            before_expiry = client.post(
                f"{stack.api}/auth/refresh", json={"refresh_token": fresh}, timeout=10
            ).status_code
        assert (at_expiry, before_expiry) == (401, 200)
        record(
            "7 clock edges",
            "access tokens 1 s before/after exp and before/after nbf; a refresh token at its "
            "expiry instant (gateway leeway 0)",
            f"exp-1s {before_exp}, exp+1s {after_exp}, before nbf {before_nbf}, after nbf "
            f"{after_nbf} (gateway, auth); refresh at expiry {at_expiry}, before {before_expiry}",
            lost=0,
        )
    finally:
        db.dispose()
        stack.stop()
