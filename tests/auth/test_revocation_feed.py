"""GET /internal/v1/revoked-sessions: every revocation reaches it, and its cursor never
skips one, even when revoking transactions commit out of order."""

from __future__ import annotations

import base64
import json
import threading
import uuid
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy
from auth_api import Api, bearer
from authcheck import ago, assert_problem, execute, is_postgres, refresh_row, rows
from falcon import testing

from auth_service.db.models import RefreshToken, SessionRevocation
from auth_service.settings import Settings, SettingsError

FEED = "/internal/v1/revoked-sessions"
TOKEN = "i" * 40


@pytest.fixture
def feed_client(make_client) -> testing.TestClient:
    """The app with a known internal token."""
    return make_client(internal_api_token=TOKEN)


@pytest.fixture
def feed_api(feed_client: testing.TestClient) -> Api:
    """API helpers over that app."""
    return Api(feed_client)


def read_feed(client: testing.TestClient, **params: Any) -> dict[str, Any]:
    """One page of the feed, as the gateway reads it."""
    result = client.simulate_get(FEED, params=params, headers={"X-Internal-Token": TOKEN})
    assert result.status_code == 200, result.text
    assert result.headers["cache-control"] == "no-store"
    page: dict[str, Any] = result.json
    return page


def read_all(client: testing.TestClient, cursor: str | None = None) -> tuple[list[str], str]:
    """Every page up to now: the session ids in order, and the cursor to go on from."""
    ids: list[str] = []
    while True:
        page = read_feed(client, **({"cursor": cursor} if cursor else {}))
        ids += [item["session_id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if not page["has_more"]:
            return ids, cursor


def sid(access_token: str) -> str:
    """The session id (sid claim) of an access token."""
    payload = access_token.split(".")[1]
    return str(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["sid"])


def test_every_way_of_ending_a_session_reaches_the_feed(
    feed_api: Api, feed_client: testing.TestClient, database_url: str
) -> None:
    admin = feed_api.admin(database_url)
    ended: dict[str, str] = {}

    user = feed_api.user("logout@example.com")
    feed_client.simulate_post("/api/v1/auth/logout", json={"refresh_token": user["refresh_token"]})
    ended["logout"] = sid(user["access_token"])

    kept = feed_api.user("changer@example.com")
    other = feed_api.login("changer@example.com").json
    changed = feed_client.simulate_put(
        "/api/v1/users/me/password",
        headers=bearer(kept["access_token"]),
        json={"current_password": "correct horse battery", "new_password": "another passphrase"},
    )
    assert changed.status_code == 204, changed.text
    ended["password change"] = sid(other["access_token"])

    deactivated = feed_api.user("inactive@example.com")
    done = feed_client.simulate_put(
        f"/api/v1/users/{deactivated['id']}",
        headers=bearer(admin["access_token"]),
        json={"is_active": False},
    )
    assert done.status_code == 200, done.text
    ended["deactivation"] = sid(deactivated["access_token"])

    deleted = feed_api.user("deleted@example.com")
    gone = feed_client.simulate_delete(
        f"/api/v1/users/{deleted['id']}", headers=bearer(admin["access_token"])
    )
    assert gone.status_code == 204, gone.text
    ended["deletion (its sessions rows are gone)"] = sid(deleted["access_token"])

    reused = feed_api.user("reuse@example.com")
    refresh = {"refresh_token": reused["refresh_token"]}
    assert feed_client.simulate_post("/api/v1/auth/refresh", json=refresh).status_code == 200
    old = refresh_row(database_url, reused["refresh_token"])
    execute(  # out of the reuse grace window
        database_url,
        sqlalchemy.update(RefreshToken).where(RefreshToken.id == old.id).values(used_at=ago(60)),
    )
    assert feed_client.simulate_post("/api/v1/auth/refresh", json=refresh).status_code == 401
    ended["refresh-token reuse"] = sid(reused["access_token"])

    listed, _ = read_all(feed_client)
    missing = {how: session for how, session in ended.items() if session not in listed}
    assert not missing, f"not in the feed: {missing}"
    # Only ended sessions are listed: the admin's and the password changer's live on.
    assert sid(admin["access_token"]) not in listed
    assert sid(kept["access_token"]) not in listed


def test_a_revocation_committed_late_is_not_skipped(
    feed_api: Api, feed_client: testing.TestClient, database_url: str
) -> None:
    """A revocation stamped before one already read, but committed after it, still comes."""
    first = feed_api.user("first@example.com")
    feed_client.simulate_post("/api/v1/auth/logout", json={"refresh_token": first["refresh_token"]})
    seen, cursor = read_all(feed_client)
    assert seen == [sid(first["access_token"])]

    # What an out-of-order commit looks like afterwards: a row stamped before the newest
    # row already read, appearing only now. A "greater than the last row seen" cursor
    # would skip it for ever.
    newest = max(
        row.revoked_at for row in rows(database_url, sqlalchemy.select(SessionRevocation.__table__))
    )
    late = uuid.uuid4()
    execute(
        database_url,
        sqlalchemy.insert(SessionRevocation).values(
            session_id=late, revoked_at=newest - timedelta(seconds=5)
        ),
    )
    again, _ = read_all(feed_client, cursor)
    assert str(late) in again


def test_concurrent_transactions_committing_out_of_order(
    feed_api: Api, feed_client: testing.TestClient, database_url: str
) -> None:
    """Two real transactions on PostgreSQL: the earlier one commits last."""
    if not is_postgres(database_url):
        pytest.skip("SQLite has one writer at a time: its commits cannot interleave")
    engine = sqlalchemy.create_engine(database_url)
    try:
        with engine.connect() as slow:
            transaction = slow.begin()
            early = uuid.uuid4()
            slow.execute(
                sqlalchemy.insert(SessionRevocation).values(session_id=early, revoked_at=ago(0))
            )
            # Meanwhile another revocation is stamped later and commits first.
            user = feed_api.user("later@example.com")
            logout = {"refresh_token": user["refresh_token"]}
            assert feed_client.simulate_post("/api/v1/auth/logout", json=logout).status_code == 204
            seen, cursor = read_all(feed_client)
            assert sid(user["access_token"]) in seen
            assert str(early) not in seen  # not committed yet
            transaction.commit()
        again, _ = read_all(feed_client, cursor)
        assert str(early) in again
    finally:
        engine.dispose()


def test_one_session_revoked_by_two_transactions_at_once_is_not_a_500(
    feed_api: Api, feed_client: testing.TestClient, database_url: str
) -> None:
    """The second transaction to log a session's revocation waits for the first, then
    adds nothing (on PostgreSQL; SQLite has a single writer)."""
    if not is_postgres(database_url):
        pytest.skip("SQLite has one writer at a time: two revocations cannot overlap")
    user = feed_api.user("twice@example.com")
    session_id = uuid.UUID(sid(user["access_token"]))
    engine = sqlalchemy.create_engine(database_url)
    try:
        with engine.connect() as other:
            transaction = other.begin()
            other.execute(
                sqlalchemy.insert(SessionRevocation).values(
                    session_id=session_id, revoked_at=ago(0)
                )
            )
            # The logout below blocks on that uncommitted row until this commits.
            threading.Timer(0.5, transaction.commit).start()
            logout = feed_client.simulate_post(
                "/api/v1/auth/logout", json={"refresh_token": user["refresh_token"]}
            )
        assert logout.status_code == 204, logout.text
        listed, _ = read_all(feed_client)
        assert listed.count(str(session_id)) == 1
    finally:
        engine.dispose()


def test_pages_through_revocations_with_the_same_timestamp(
    feed_api: Api, feed_client: testing.TestClient, database_url: str
) -> None:
    admin = feed_api.admin(database_url)
    user = feed_api.user("many@example.com")
    sessions = {sid(user["access_token"])}
    for _ in range(4):
        sessions.add(sid(feed_api.login("many@example.com").json["access_token"]))
    deactivate = feed_client.simulate_put(
        f"/api/v1/users/{user['id']}",
        headers=bearer(admin["access_token"]),
        json={"is_active": False},
    )
    assert deactivate.status_code == 200  # five sessions revoked at one instant

    listed: list[str] = []
    cursor = None
    pages = 0
    while True:
        page = read_feed(feed_client, limit=2, **({"cursor": cursor} if cursor else {}))
        pages += 1
        assert len(page["items"]) <= 2
        listed += [item["session_id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if not page["has_more"]:
            break
    assert pages == 3
    assert sorted(listed) == sorted(sessions)  # each exactly once within the run


def test_starts_with_revocations_whose_tokens_may_still_be_live(
    feed_client: testing.TestClient, database_url: str
) -> None:
    recent, ancient = uuid.uuid4(), uuid.uuid4()
    execute(
        database_url,
        sqlalchemy.insert(SessionRevocation).values(
            [
                {"session_id": recent, "revoked_at": ago(30 * 60)},
                {"session_id": ancient, "revoked_at": ago(3 * 60 * 60)},
            ]
        ),
    )
    page = read_feed(feed_client)
    listed = {item["session_id"]: item for item in page["items"]}
    assert str(ancient) not in listed  # its tokens expired long ago (60-minute lifetime)
    assert str(recent) in listed
    assert listed[str(recent)]["expires_at"] > listed[str(recent)]["revoked_at"]


@pytest.mark.parametrize("header", [None, "", "i" * 39, "j" * 40])
def test_refuses_anyone_without_the_internal_token(
    feed_client: testing.TestClient, header: str | None
) -> None:
    headers = {} if header is None else {"X-Internal-Token": header}
    result = feed_client.simulate_get(FEED, headers=headers)
    assert_problem(result, 401, "invalid-internal-token")
    assert "items" not in result.text


def test_a_user_access_token_does_not_open_the_feed(feed_api: Api) -> None:
    user = feed_api.user("curious@example.com")
    result = feed_api.client.simulate_get(FEED, headers=bearer(user["access_token"]))
    assert_problem(result, 401, "invalid-internal-token")


@pytest.mark.parametrize("cursor", ["nonsense", "1.2.3", "1." + "g" * 32 + ".0", "9" * 18])
def test_malformed_cursor_is_422(feed_client: testing.TestClient, cursor: str) -> None:
    result = feed_client.simulate_get(
        FEED, params={"cursor": cursor}, headers={"X-Internal-Token": TOKEN}
    )
    assert_problem(result, 422, "validation-error", fields=["cursor"])


@pytest.mark.parametrize("token", ["x" * 31, "short"])
def test_a_short_internal_token_stops_start_up(token: str) -> None:
    with pytest.raises(SettingsError, match="INTERNAL_API_TOKEN"):
        Settings.from_env({"INTERNAL_API_TOKEN": token})
