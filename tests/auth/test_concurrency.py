"""Races on the real PostgreSQL: parallel refreshes with one token, parallel sign-ups of one
email, parallel second steps with one mfa_token or one TOTP code.

Threads share one app (as gunicorn's threads do) and start together at a barrier.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pyotp
import pytest
import sqlalchemy
from auth_api import PASSWORD, Api, bearer
from authcheck import empty_all_tables, refresh_row, rows, session_row
from falcon import testing
from problem_observer import observe

from auth_service.app import create_app
from auth_service.db.models import RefreshToken, User
from auth_service.settings import DEFAULT_SPEC_PATH, Settings
from auth_service.spec import Contract
from authgate_common.problem_types import ProblemType

pytestmark = pytest.mark.postgres

PARALLEL = 20
ClientFactory = Callable[..., testing.TestClient]


@pytest.fixture
def pg_client(migrated_postgres: str, var_dir: Path, contract: Contract) -> Iterator[ClientFactory]:
    """Clients of apps on the emptied PostgreSQL database (never the SQLite parameter)."""
    empty_all_tables(migrated_postgres)

    def build(**overrides: Any) -> testing.TestClient:
        settings = Settings(
            database_url=migrated_postgres,
            var_dir=var_dir,
            spec_path=DEFAULT_SPEC_PATH,
            bcrypt_rounds=4,
            response_validation="strict",
            **overrides,
        )
        app = create_app(settings, contract=contract)
        return testing.TestClient(app)

    yield build


def race(count: int, call: Callable[[int], testing.Result]) -> list[testing.Result]:
    """Run `call(i)` in `count` threads released together."""
    barrier = threading.Barrier(count)

    def run(i: int) -> testing.Result:
        barrier.wait(timeout=30)
        return call(i)

    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(run, range(count)))


def statuses(results: list[testing.Result]) -> Counter[int]:
    return Counter(result.status_code for result in results)


def family_size(database_url: str, session_id: Any) -> int:
    found = rows(
        database_url,
        sqlalchemy.select(RefreshToken.id).where(RefreshToken.session_id == session_id),
    )
    return len(found)


def test_parallel_refreshes_with_one_token_one_wins(
    pg_client: ClientFactory, migrated_postgres: str
) -> None:
    client = pg_client()
    user = Api(client).user("ada@example.com")
    results = race(
        PARALLEL,
        lambda _: client.simulate_post(
            "/api/v1/auth/refresh", json={"refresh_token": user["refresh_token"]}
        ),
    )
    assert statuses(results) == {200: 1, 409: PARALLEL - 1}, [r.text for r in results]
    for result in results:
        if result.status_code == 409:
            observe(result.json, ProblemType.REFRESH_TOKEN_ROTATED)
    old = refresh_row(migrated_postgres, user["refresh_token"])
    assert family_size(migrated_postgres, old.session_id) == 2
    assert session_row(migrated_postgres, old.session_id).revoked_at is None
    winner = next(r for r in results if r.status_code == 200).json
    assert old.replaced_by_id == refresh_row(migrated_postgres, winner["refresh_token"]).id
    me = client.simulate_get("/api/v1/auth/me", headers=bearer(winner["access_token"]))
    assert me.status_code == 200


def test_parallel_refreshes_without_grace_one_wins_and_session_ends(
    pg_client: ClientFactory, migrated_postgres: str
) -> None:
    client = pg_client(refresh_reuse_grace_seconds=0)
    user = Api(client).user("ada@example.com")
    results = race(
        PARALLEL,
        lambda _: client.simulate_post(
            "/api/v1/auth/refresh", json={"refresh_token": user["refresh_token"]}
        ),
    )
    assert statuses(results) == {200: 1, 401: PARALLEL - 1}, [r.text for r in results]
    old = refresh_row(migrated_postgres, user["refresh_token"])
    assert family_size(migrated_postgres, old.session_id) == 2
    assert session_row(migrated_postgres, old.session_id).revoked_at is not None
    winner = next(r for r in results if r.status_code == 200).json
    me = client.simulate_get("/api/v1/auth/me", headers=bearer(winner["access_token"]))
    assert me.status_code == 401


@pytest.mark.parametrize("mixed_case", [False, True], ids=["same-email", "case-variants"])
def test_parallel_registrations_of_one_email_one_wins(
    pg_client: ClientFactory, migrated_postgres: str, mixed_case: bool
) -> None:
    client = pg_client()

    def email(i: int) -> str:
        if not mixed_case:
            return "ada@example.com"
        base = "ada@example.com"
        return "".join(c.upper() if (i >> (n % 5)) & 1 else c for n, c in enumerate(base))

    results = race(
        PARALLEL,
        lambda i: client.simulate_post(
            "/api/v1/auth/register",
            json={"email": f" {email(i)} " if i % 2 else email(i), "password": "long enough"},
        ),
    )
    assert statuses(results) == {201: 1, 409: PARALLEL - 1}, [r.text for r in results]
    found = rows(migrated_postgres, sqlalchemy.select(User.email))
    assert [row.email for row in found] == ["ada@example.com"]


def mfa_user(client: testing.TestClient) -> tuple[Api, pyotp.TOTP, list[str]]:
    """A user with TOTP on: the API, the authenticator, the recovery codes."""
    api = Api(client)
    user = api.user("ada@example.com")
    started = client.simulate_post(
        "/api/v1/auth/mfa/totp", json={"password": PASSWORD}, headers=bearer(user["access_token"])
    )
    totp = pyotp.TOTP(started.json["secret"])
    confirmed = client.simulate_post(
        "/api/v1/auth/mfa/totp/confirm",
        json={"code": totp.now()},
        headers=bearer(user["access_token"]),
    )
    assert confirmed.status_code == 200, confirmed.text
    return api, totp, confirmed.json["recovery_codes"]


def test_parallel_second_steps_with_one_mfa_token_one_wins(pg_client: ClientFactory) -> None:
    client = pg_client(login_max_failures=1000)
    api, _, codes = mfa_user(client)
    token = api.login("ada@example.com").json["mfa_token"]
    results = race(
        PARALLEL,
        lambda i: client.simulate_post(
            "/api/v1/auth/login/mfa", json={"mfa_token": token, "code": codes[i % len(codes)]}
        ),
    )
    assert statuses(results) == {200: 1, 401: PARALLEL - 1}


def test_parallel_uses_of_one_totp_code_one_wins(pg_client: ClientFactory) -> None:
    client = pg_client(login_max_failures=1000)
    api, totp, _ = mfa_user(client)
    tokens = [api.login("ada@example.com").json["mfa_token"] for _ in range(PARALLEL)]
    code = totp.at(time.time() + 30)
    results = race(
        PARALLEL,
        lambda i: client.simulate_post(
            "/api/v1/auth/login/mfa", json={"mfa_token": tokens[i], "code": code}
        ),
    )
    assert statuses(results) == {200: 1, 401: PARALLEL - 1}
