"""The audit trail (in process): every security action leaves its event, in its own
transaction, and never a secret; the admin and self-service listings page correctly.

Runs on PostgreSQL and SQLite (the `database_url` fixture).
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyotp
import pytest
import sqlalchemy
from auth_api import PASSWORD, Api, bearer
from authcheck import ago, assert_problem, execute, rows, sha256_hex
from falcon import testing
from jose import jwt
from test_cli import import_env, monolith_users, run_cli, write_users

from auth_service.db.models import AuditEvent, PasswordResetToken
from auth_service.settings import Settings, SettingsError

EVENTS = "/api/v1/audit-events"
MY_EVENTS = "/api/v1/auth/events"
NEW_PASSWORD = "a brand new passphrase 77"
WRONG_PASSWORD = "not the password at all"
UA = {"User-Agent": "audit-test/1.0"}


def stored_events(database_url: str) -> list[Any]:
    """Every audit_events row, oldest first."""
    return rows(
        database_url,
        sqlalchemy.select(AuditEvent.__table__).order_by(AuditEvent.occurred_at, AuditEvent.id),
    )


def types_of(database_url: str, user_id: str | None = None) -> list[str]:
    """The event types stored (of one user), oldest first."""
    found = stored_events(database_url)
    if user_id is not None:
        found = [row for row in found if row.user_id == uuid.UUID(user_id)]
    return [row.event_type for row in found]


def assert_no_secret(database_url: str, secrets: list[str]) -> None:
    """No stored event holds any of these strings, in any column."""
    for row in stored_events(database_url):
        text = json.dumps({k: str(v) for k, v in row._mapping.items()}) + json.dumps(
            row.details if isinstance(row.details, dict) else json.loads(row.details)
        )
        for secret in secrets:
            assert secret not in text, f"{row.event_type} holds a secret"


def listed(
    client: testing.TestClient, token: str, path: str = EVENTS, **params: Any
) -> testing.Result:
    return client.simulate_get(path, params=params, headers=bearer(token))


def sid_of(access_token: str) -> str:
    return str(jwt.get_unverified_claims(access_token)["sid"])


# --- what is recorded ------------------------------------------------------------------


def test_logins_are_recorded_with_client_and_never_a_secret(api: Api, database_url: str) -> None:
    ada = api.user("ada@example.com")
    assert_problem(api.login("ada@example.com", WRONG_PASSWORD, headers=UA), 401)
    assert_problem(api.login("nobody@example.com", WRONG_PASSWORD, headers=UA), 401)
    good = api.login("ada@example.com", headers=UA)
    assert good.status_code == 200

    events = stored_events(database_url)
    assert [e.event_type for e in events] == [
        "user.created",
        "login.succeeded",
        "login.failed",
        "login.failed",
        "login.succeeded",
    ]
    created, _, wrong, unknown, succeeded = events
    assert created.details == {"via": "register", "is_superuser": False}
    assert created.actor_id == created.user_id == uuid.UUID(ada["id"])
    assert wrong.user_id == uuid.UUID(ada["id"]) and wrong.actor_id is None
    assert wrong.details == {"reason": "wrong_password"}
    # SECURITY: an unknown email leaves no user and no email, only where it came from.
    assert unknown.user_id is None and unknown.details == {"reason": "unknown_account"}
    assert (unknown.client_address, unknown.user_agent) == ("127.0.0.1", "audit-test/1.0")
    assert succeeded.session_id == uuid.UUID(sid_of(good.json["access_token"]))
    assert succeeded.details == {"amr": ["pwd"]}
    assert (succeeded.client_address, succeeded.user_agent) == ("127.0.0.1", "audit-test/1.0")
    assert_no_secret(
        database_url,
        [
            PASSWORD,
            WRONG_PASSWORD,
            "nobody@example.com",
            sha256_hex("nobody@example.com"),
            good.json["access_token"],
            good.json["refresh_token"],
            sha256_hex(good.json["refresh_token"]),
        ],
    )


def test_inactive_and_throttled_logins(make_client: Any, database_url: str) -> None:
    api = Api(make_client(login_max_failures=2))
    ada = api.user("ada@example.com")
    admin = api.admin(database_url)
    for _ in range(2):
        assert_problem(api.login("ada@example.com", WRONG_PASSWORD), 401)
    assert_problem(api.login("ada@example.com"), 429, "login-throttled")
    assert_problem(api.login("ghost@example.com"), 401)
    assert_problem(api.login("ghost@example.com"), 401)
    assert_problem(api.login("ghost@example.com"), 429, "login-throttled")
    throttled = [e for e in stored_events(database_url) if e.event_type == "login.throttled"]
    assert [e.user_id for e in throttled] == [uuid.UUID(ada["id"]), None]

    deactivated = api.client.simulate_put(
        f"/api/v1/users/{ada['id']}",
        json={"is_active": False},
        headers=bearer(admin["access_token"]),
    )
    assert deactivated.status_code == 200
    unlocked = api.client.simulate_post(
        f"/api/v1/users/{ada['id']}/unlock", headers=bearer(admin["access_token"])
    )
    assert unlocked.status_code == 204
    assert_problem(api.login("ada@example.com"), 403, "inactive-user")
    tail = stored_events(database_url)[-4:]
    assert [e.event_type for e in tail] == [
        "user.updated",
        "user.deactivated",
        "user.unlocked",
        "login.failed",
    ]
    assert tail[0].details == {"fields": ["is_active"]}
    assert tail[1].details == {"sessions_revoked": 1}  # ada's one session ended
    assert {e.actor_id for e in tail[:3]} == {uuid.UUID(admin["id"])}
    assert tail[3].details == {"reason": "inactive"}


def test_a_throttled_password_check_is_recorded(make_client: Any, database_url: str) -> None:
    api = Api(make_client(login_max_failures=2))
    ada = api.user("ada@example.com")
    for current in (WRONG_PASSWORD, WRONG_PASSWORD, PASSWORD):
        answer = api.client.simulate_put(
            "/api/v1/users/me/password",
            json={"current_password": current, "new_password": NEW_PASSWORD},
            headers=bearer(ada["access_token"]),
        )
    assert_problem(answer, 429, "login-throttled")
    tail = stored_events(database_url)[-3:]
    assert [e.event_type for e in tail] == ["reauth.failed", "reauth.failed", "login.throttled"]
    assert tail[2].details == {"during": "password.change"}
    assert tail[2].user_id == tail[2].actor_id == uuid.UUID(ada["id"])
    assert "password.changed" not in types_of(database_url)


def test_password_change_is_recorded_only_when_it_happened(api: Api, database_url: str) -> None:
    ada = api.user("ada@example.com")
    other = api.login("ada@example.com").json
    change = "/api/v1/users/me/password"
    refused = api.client.simulate_put(
        change,
        json={"current_password": WRONG_PASSWORD, "new_password": NEW_PASSWORD},
        headers=bearer(ada["access_token"]),
    )
    assert_problem(refused, 400, "wrong-password")
    # Nothing changed, so no password.changed: the wrong guess is a reauth.failed.
    assert types_of(database_url)[-1] == "reauth.failed"
    assert "password.changed" not in types_of(database_url)
    failed = stored_events(database_url)[-1]
    assert failed.details == {"during": "password.change"}
    assert failed.session_id == uuid.UUID(sid_of(ada["access_token"]))

    done = api.client.simulate_put(
        change,
        json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
        headers=bearer(ada["access_token"]),
    )
    assert done.status_code == 204
    changed = stored_events(database_url)[-1]
    assert changed.event_type == "password.changed"
    assert changed.details == {"sessions_revoked": 1}  # `other`
    assert_no_secret(database_url, [PASSWORD, NEW_PASSWORD, WRONG_PASSWORD, other["access_token"]])


def test_a_rolled_back_action_leaves_no_event(api: Api, database_url: str) -> None:
    admin = api.admin(database_url)
    ada = api.user("ada@example.com")
    api.user("bob@example.com")
    before = types_of(database_url)
    # The email is taken: the UPDATE fails on the unique index and rolls back.
    taken = api.client.simulate_put(
        f"/api/v1/users/{ada['id']}",
        json={"email": "bob@example.com"},
        headers=bearer(admin["access_token"]),
    )
    assert_problem(taken, 409, "email-taken")
    # The last superuser cannot be deleted: refused inside the transaction.
    last = api.client.simulate_delete(
        f"/api/v1/users/{admin['id']}", headers=bearer(admin["access_token"])
    )
    assert_problem(last, 409, "last-superuser")
    assert types_of(database_url) == before


def test_mfa_events_and_no_codes_stored(api: Api, database_url: str) -> None:
    ada = api.user("ada@example.com")
    token = ada["access_token"]
    started = api.client.simulate_post(
        "/api/v1/auth/mfa/totp", json={"password": PASSWORD}, headers=bearer(token)
    )
    secret = started.json["secret"]
    totp = pyotp.TOTP(secret)
    wrong_code = f"{(int(totp.now()) + 1) % 1_000_000:06d}"
    bad = api.client.simulate_post(
        "/api/v1/auth/mfa/totp/confirm", json={"code": wrong_code}, headers=bearer(token)
    )
    assert_problem(bad, 400, "wrong-mfa-code")
    confirmed = api.client.simulate_post(
        "/api/v1/auth/mfa/totp/confirm", json={"code": totp.now()}, headers=bearer(token)
    )
    codes = confirmed.json["recovery_codes"]
    assert types_of(database_url)[-2:] == ["mfa.failed", "mfa.enrolled"]

    challenge = api.login("ada@example.com").json["mfa_token"]
    refused = api.client.simulate_post(
        "/api/v1/auth/login/mfa", json={"mfa_token": challenge, "code": wrong_code}
    )
    assert_problem(refused, 401, "invalid-mfa-code")
    passed = api.client.simulate_post(
        "/api/v1/auth/login/mfa", json={"mfa_token": challenge, "code": codes[0]}
    )
    assert passed.status_code == 200, passed.text
    fresh = api.client.simulate_post(
        "/api/v1/auth/mfa/recovery-codes", json={"password": PASSWORD}, headers=bearer(token)
    )
    removed = api.client.simulate_delete(
        "/api/v1/auth/mfa/totp",
        json={"password": PASSWORD, "code": fresh.json["recovery_codes"][0]},
        headers=bearer(token),
    )
    assert removed.status_code == 204
    tail = stored_events(database_url)[-4:]
    assert [e.event_type for e in tail] == [
        "mfa.failed",
        "login.succeeded",
        "mfa.recovery_codes_regenerated",
        "mfa.removed",
    ]
    assert tail[0].details == {"during": "login.mfa"}
    assert tail[1].details == {"amr": ["pwd", "otp"]}
    assert_no_secret(
        database_url,
        [
            secret,
            challenge,
            sha256_hex(challenge),
            wrong_code,
            *codes,
            *fresh.json["recovery_codes"],
            passed.json["refresh_token"],
        ],
    )


def test_sessions_ended_and_reuse_are_recorded(make_client: Any, database_url: str) -> None:
    api = Api(make_client(refresh_reuse_grace_seconds=0))
    admin = api.admin(database_url)
    ada = api.user("ada@example.com")
    second = api.login("ada@example.com").json
    third = api.login("ada@example.com").json
    fourth = api.login("ada@example.com").json
    token = ada["access_token"]
    ended = api.client.simulate_delete(
        f"/api/v1/auth/sessions/{sid_of(second['access_token'])}", headers=bearer(token)
    )
    assert ended.status_code == 204
    logout = api.client.simulate_post(
        "/api/v1/auth/logout", json={"refresh_token": third["refresh_token"]}
    )
    assert logout.status_code == 204
    # A rotated refresh token presented again: reuse, the session ends.
    rotated = api.client.simulate_post(
        "/api/v1/auth/refresh", json={"refresh_token": fourth["refresh_token"]}
    )
    assert rotated.status_code == 200
    reused = api.client.simulate_post(
        "/api/v1/auth/refresh", json={"refresh_token": fourth["refresh_token"]}
    )
    assert_problem(reused, 401, "invalid-refresh-token")
    by_admin = api.client.simulate_delete(
        f"/api/v1/users/{ada['id']}/sessions", headers=bearer(admin["access_token"])
    )
    assert by_admin.status_code == 204

    ada_id = uuid.UUID(ada["id"])
    events = [e for e in stored_events(database_url) if e.user_id == ada_id][-4:]
    assert [(e.event_type, e.details.get("reason")) for e in events] == [
        ("session.revoked", "user"),
        ("session.revoked", "logout"),
        ("session.reuse_detected", None),
        ("session.revoked", "admin"),
    ]
    assert events[0].session_id == uuid.UUID(sid_of(second["access_token"]))
    assert events[1].session_id == uuid.UUID(sid_of(third["access_token"]))
    assert events[2].session_id == uuid.UUID(sid_of(fourth["access_token"]))
    assert events[2].details == {"sessions_revoked": 1}
    assert events[3].actor_id == uuid.UUID(admin["id"])
    assert events[3].session_id == uuid.UUID(sid_of(token))  # the only one still live


def test_user_lifecycle_and_history_outlives_the_user(api: Api, database_url: str) -> None:
    admin = api.admin(database_url)
    auth = bearer(admin["access_token"])
    created = api.client.simulate_post(
        "/api/v1/users", json={"email": "bob@example.com", "password": PASSWORD}, headers=auth
    )
    bob = created.json["id"]
    api.client.simulate_put(f"/api/v1/users/{bob}", json={"full_name": "Bob"}, headers=auth)
    # Setting what is already so changes nothing, so no event.
    api.client.simulate_put(f"/api/v1/users/{bob}", json={"full_name": "Bob"}, headers=auth)
    reset = api.client.simulate_delete(f"/api/v1/users/{bob}/mfa", headers=auth)
    assert reset.status_code == 204
    deleted = api.client.simulate_delete(f"/api/v1/users/{bob}", headers=auth)
    assert deleted.status_code == 204
    assert types_of(database_url, bob) == [
        "user.created",
        "user.updated",
        "mfa.removed",
        "user.deleted",
    ]
    history = listed(api.client, admin["access_token"], user_id=bob)
    assert history.status_code == 200, history.text
    assert [i["type"] for i in history.json["items"]] == [
        "user.deleted",
        "mfa.removed",
        "user.updated",
        "user.created",
    ]
    item = history.json["items"][0]
    assert item["actor_id"] == admin["id"] and item["user_id"] == bob
    assert item["client_address"] == "127.0.0.1"
    assert history.json["items"][2]["details"] == {"fields": ["full_name"]}
    assert history.json["items"][3]["details"] == {"via": "admin", "is_superuser": False}


def test_password_reset_is_recorded(api: Api, database_url: str) -> None:
    ada = api.user("ada@example.com")
    token = "reset-token-" + uuid.uuid4().hex
    execute(
        database_url,
        sqlalchemy.insert(PasswordResetToken).values(
            id=uuid.uuid4(),
            token_hash=sha256_hex(token),
            user_id=uuid.UUID(ada["id"]),
            created_at=ago(10),
            expires_at=datetime.now(UTC) + timedelta(minutes=10),
        ),
    )
    done = api.client.simulate_post(
        "/api/v1/auth/password-reset/confirm",
        json={"token": token, "new_password": NEW_PASSWORD},
        headers=UA,
    )
    assert done.status_code == 204, done.text
    event = stored_events(database_url)[-1]
    assert event.event_type == "password.reset"
    assert event.details == {"sessions_revoked": 1}
    assert event.user_agent == "audit-test/1.0"
    assert_no_secret(database_url, [token, sha256_hex(token), NEW_PASSWORD])


def test_imported_users_are_recorded(api: Api, database_url: str, tmp_path: Path) -> None:
    users = monolith_users()
    source = write_users(tmp_path / "users.jsonl", users)
    done = run_cli("import-users", str(source), env=import_env(database_url, tmp_path))
    assert done.returncode == 0, done.stderr
    created = [e for e in stored_events(database_url) if e.event_type == "user.created"]
    assert [e.details["via"] for e in created] == ["import", "import"]
    assert all(e.user_id is not None and e.actor_id is None for e in created)
    assert_no_secret(database_url, [user["hashed_password"] for user in users])


# --- reading the trail -----------------------------------------------------------------


def test_cursor_walk_returns_every_event_once_newest_first(api: Api, database_url: str) -> None:
    admin = api.admin(database_url)
    for _ in range(6):
        api.login("admin@example.com", WRONG_PASSWORD)
        api.login("admin@example.com")
    expected = [str(row.id) for row in reversed(stored_events(database_url))]
    assert len(expected) > 10
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params = {"limit": 4, **({"cursor": cursor} if cursor else {})}
        page = listed(api.client, admin["access_token"], **params)
        assert page.status_code == 200, page.text
        assert page.headers["cache-control"] == "no-store"
        assert len(page.json["items"]) <= 4
        seen += [item["id"] for item in page.json["items"]]
        pages += 1
        cursor = page.json["next_cursor"]
        if cursor is None:
            break
    assert seen == expected[: len(seen)] and len(seen) == len(expected)
    assert pages == -(-len(expected) // 4)


def test_filters_by_type_user_and_time(api: Api, database_url: str) -> None:
    admin = api.admin(database_url)
    ada = api.user("ada@example.com")
    api.login("ada@example.com", WRONG_PASSWORD)
    api.login("ghost@example.com", WRONG_PASSWORD)
    token = admin["access_token"]
    failed = listed(api.client, token, type="login.failed")
    assert [i["user_id"] for i in failed.json["items"]] == [None, ada["id"]]
    both = listed(api.client, token, type=["login.failed", "user.created"], user_id=ada["id"])
    assert [i["type"] for i in both.json["items"]] == ["login.failed", "user.created"]
    # Move ada's creation an hour back: `since` leaves it out, `until` keeps only it.
    execute(
        database_url,
        sqlalchemy.update(AuditEvent)
        .where(AuditEvent.event_type == "user.created", AuditEvent.user_id == uuid.UUID(ada["id"]))
        .values(occurred_at=ago(3600)),
    )
    cut = (datetime.now(UTC) - timedelta(minutes=30)).isoformat()
    recent = listed(api.client, token, user_id=ada["id"], since=cut)
    assert "user.created" not in [i["type"] for i in recent.json["items"]]
    old = listed(api.client, token, user_id=ada["id"], until=cut.replace("+00:00", "Z"))
    assert [i["type"] for i in old.json["items"]] == ["user.created"]


def test_listing_refusals(api: Api, database_url: str) -> None:
    admin = api.admin(database_url)
    ada = api.user("ada@example.com")
    assert_problem(listed(api.client, ada["access_token"]), 403, "forbidden")
    assert_problem(api.client.simulate_get(EVENTS), 401)
    assert_problem(api.client.simulate_get(MY_EVENTS), 401)
    for params, field in (
        ({"cursor": "not-a-cursor"}, "cursor"),
        ({"limit": 101}, "limit"),
        ({"limit": 0}, "limit"),
        ({"type": "login.nonsense"}, "type"),
        ({"since": "yesterday"}, "since"),
        ({"until": "2024-05-01T00:00:00"}, "until"),  # no offset: ambiguous
        ({"user_id": "42"}, "user_id"),
    ):
        result = listed(api.client, admin["access_token"], **params)
        assert_problem(result, 422, "validation-error", fields=[field])


def test_my_events_are_only_mine(api: Api, database_url: str) -> None:
    ada = api.user("ada@example.com")
    bob = api.user("bob@example.com")
    api.login("bob@example.com", WRONG_PASSWORD)
    api.login("ada@example.com", WRONG_PASSWORD, headers=UA)
    mine = listed(api.client, ada["access_token"], path=MY_EVENTS)
    assert mine.status_code == 200, mine.text
    types = [i["type"] for i in mine.json["items"]]
    assert types == ["login.failed", "login.succeeded", "user.created"]
    assert {i["user_id"] for i in mine.json["items"]} == {ada["id"]}
    assert mine.json["items"][0]["user_agent"] == "audit-test/1.0"
    assert mine.json["next_cursor"] is None
    # `user_id` is not a parameter here: one cannot read another user's trail.
    other = api.client.simulate_get(
        MY_EVENTS, params={"user_id": bob["id"]}, headers=bearer(ada["access_token"])
    )
    assert {i["user_id"] for i in other.json["items"]} == {ada["id"]}
    first = listed(api.client, ada["access_token"], path=MY_EVENTS, limit=2)
    rest = listed(api.client, ada["access_token"], path=MY_EVENTS, cursor=first.json["next_cursor"])
    assert [i["type"] for i in first.json["items"] + rest.json["items"]] == types


# --- retention -------------------------------------------------------------------------


def test_prune_audit_deletes_only_what_is_past_retention(
    api: Api, database_url: str, tmp_path: Path
) -> None:
    api.user("ada@example.com")
    old = [
        {
            "id": uuid.uuid4(),
            "occurred_at": ago(days * 86400),
            "event_type": "login.failed",
            "details": {},
        }
        for days in (31, 40, 400)
    ]
    execute(database_url, sqlalchemy.insert(AuditEvent).values(old))
    kept = {row.id for row in stored_events(database_url)} - {row["id"] for row in old}
    env = {**import_env(database_url, tmp_path), "AUDIT_RETENTION_DAYS": "30"}
    done = run_cli("prune-audit", env=env)
    assert done.returncode == 0, done.stderr
    assert "older than 30 day(s)" in done.stdout
    assert "Done: deleted 3 audit event(s)" in done.stdout
    assert {row.id for row in stored_events(database_url)} == kept
    again = run_cli("prune-audit", env=env)
    assert "Done: deleted 0 audit event(s)" in again.stdout


@pytest.mark.parametrize("value", ["0", "-1", "many"])
def test_audit_retention_days_is_checked(value: str) -> None:
    with pytest.raises(SettingsError, match="AUDIT_RETENTION_DAYS"):
        Settings.from_env({"AUDIT_RETENTION_DAYS": value})
    assert Settings.from_env({}).audit_retention_days == 365
