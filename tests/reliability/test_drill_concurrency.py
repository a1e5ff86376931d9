"""Drill 6: races that must have one winner, lose no update and keep one superuser.

Each race fires its requests at the same instant (a barrier) through the gateway, against
real gunicorn workers on PostgreSQL, and then checks the invariant in the database.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import requests
import sqlalchemy
from reliability_support import (
    PASSWORD,
    PrivatePostgres,
    PrivateRedis,
    record,
    register_and_login,
    session,
    start_stack,
)


def race(calls: list[Callable[[requests.Session], requests.Response]]) -> list[requests.Response]:
    """Run every call at once, each on its own connection; their answers in call order."""
    barrier = threading.Barrier(len(calls))
    answers: list[requests.Response | None] = [None] * len(calls)

    def run(index: int) -> None:
        with session() as client:
            barrier.wait(30)
            answers[index] = calls[index](client)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert all(answer is not None for answer in answers), "a racer got no answer"
    return [answer for answer in answers if answer is not None]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_races_keep_their_invariants(
    tmp_path: Path, private_postgres: PrivatePostgres, private_redis: PrivateRedis
) -> None:
    stack = start_stack(
        tmp_path,
        private_postgres.url,
        private_redis.url,
        auth_env={"AUTH_THREADS": "8", "DATABASE_POOL_SIZE": "10"},
    )
    db = sqlalchemy.create_engine(private_postgres.url)
    api = stack.api
    try:
        # Two superusers, made the operators' way.
        admins = ["root1@example.com", "root2@example.com"]
        for email in admins:
            register_and_login(api, email)
        with db.begin() as connection:
            connection.execute(
                sqlalchemy.text("UPDATE users SET is_superuser = true WHERE email = ANY(:emails)"),
                {"emails": admins},
            )
        admin_pairs = []
        with session() as client:
            for email in admins:
                login = client.post(
                    f"{api}/auth/login", json={"email": email, "password": PASSWORD}, timeout=10
                )
                admin_pairs.append(login.json())

        # 1. Fifty refreshes of one token: one 200, the rest 409 (the grace window), no 5xx.
        pair = register_and_login(api, "refresh@example.com")
        body = {"refresh_token": pair["refresh_token"]}
        refreshes = race([lambda c: c.post(f"{api}/auth/refresh", json=body, timeout=30)] * 50)
        refresh_counts = Counter(answer.status_code for answer in refreshes)
        assert refresh_counts[200] == 1 and refresh_counts[409] == 49, refresh_counts
        winner = next(a for a in refreshes if a.status_code == 200).json()
        with db.connect() as connection:
            live = connection.execute(
                sqlalchemy.text(
                    "SELECT count(*) FROM refresh_tokens t JOIN users u ON u.id = t.user_id "
                    "WHERE u.email = 'refresh@example.com' AND t.used_at IS NULL"
                )
            ).scalar_one()
        assert live == 1, f"{live} unused refresh tokens in the session"
        with session() as client:
            again = client.post(
                f"{api}/auth/refresh", json={"refresh_token": winner["refresh_token"]}, timeout=10
            )
        assert again.status_code == 200, "the winner's token must still work"

        # 2. Parallel password changes from the same current password: exactly one wins,
        # and the stored password is the winner's.
        user = register_and_login(api, "password@example.com")
        new_passwords = [f"new password number {i}" for i in range(8)]
        changes = race(
            [
                (
                    lambda c, new=new: c.put(
                        f"{api}/users/me/password",
                        json={"current_password": PASSWORD, "new_password": new},
                        headers=bearer(user["access_token"]),
                        timeout=30,
                    )
                )
                for new in new_passwords
            ]
        )
        change_counts = Counter(answer.status_code for answer in changes)
        assert change_counts[204] == 1 and all(s < 500 for s in change_counts), change_counts
        won = new_passwords[[a.status_code for a in changes].index(204)]
        with session() as client:
            logins = {
                candidate: client.post(
                    f"{api}/auth/login",
                    json={"email": "password@example.com", "password": candidate},
                    timeout=10,
                ).status_code
                for candidate in [PASSWORD, *new_passwords]
            }
        assert [p for p, status in logins.items() if status == 200] == [won], logins

        # 3. Parallel admin updates of one user, each to a different field: none is lost.
        target = register_and_login(api, "target@example.com")
        with session() as client:
            target_id = client.get(
                f"{api}/auth/me", headers=bearer(target["access_token"]), timeout=10
            ).json()["id"]
        admin_token = admin_pairs[0]["access_token"]
        updates = [{"full_name": "Ada Lovelace"}, {"email": "target2@example.com"}]
        updated = race(
            [
                (
                    lambda c, change=change: c.put(
                        f"{api}/users/{target_id}",
                        json=change,
                        headers=bearer(admin_token),
                        timeout=30,
                    )
                )
                for change in updates
            ]
        )
        assert [a.status_code for a in updated] == [200, 200], [a.text for a in updated]
        with db.connect() as connection:
            row = connection.execute(
                sqlalchemy.text("SELECT full_name, email FROM users WHERE id = :id"),
                {"id": target_id},
            ).one()
        assert (row.full_name, row.email) == ("Ada Lovelace", "target2@example.com"), row

        # 4. The two superusers demote each other at once: never zero superusers.
        ids = []
        with session() as client:
            for admin_pair in admin_pairs:
                ids.append(
                    client.get(
                        f"{api}/auth/me", headers=bearer(admin_pair["access_token"]), timeout=10
                    ).json()["id"]
                )
        demotions = race(
            [
                lambda c: c.put(
                    f"{api}/users/{ids[1]}",
                    json={"is_superuser": False},
                    headers=bearer(admin_pairs[0]["access_token"]),
                    timeout=30,
                ),
                lambda c: c.put(
                    f"{api}/users/{ids[0]}",
                    json={"is_superuser": False},
                    headers=bearer(admin_pairs[1]["access_token"]),
                    timeout=30,
                ),
            ]
        )
        demotion_statuses = sorted(a.status_code for a in demotions)
        with db.connect() as connection:
            superusers = connection.execute(
                sqlalchemy.text("SELECT count(*) FROM users WHERE is_superuser AND is_active")
            ).scalar_one()
        assert superusers >= 1, f"no superuser left after {demotion_statuses}"
        assert all(s < 500 for s in demotion_statuses), demotion_statuses
        record(
            "6 concurrency",
            "50 refreshes of one token; 8 password changes; 2 admin updates of one user; "
            "2 superusers demoting each other, each race released at one barrier",
            f"refresh {dict(refresh_counts)}; password {dict(change_counts)} (the 204's "
            f"password is the one that works); both updates kept; demotions "
            f"{demotion_statuses}, {superusers} superuser(s) left",
            lost=0,
        )
    finally:
        db.dispose()
        stack.stop()
