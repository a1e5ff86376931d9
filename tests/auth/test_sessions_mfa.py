"""Sessions you can see and end, and the TOTP second factor with recovery codes (in process).

Codes come from pyotp with the secret the service handed out, at real time steps.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import pyotp
import pytest
import sqlalchemy
from auth_api import PASSWORD, Api, bearer
from authcheck import ago, assert_problem, assert_unauthorized_token, execute, rows, sha256_hex
from cryptography.fernet import Fernet
from falcon import testing
from jose import jwt

from auth_service.db.models import (
    LoginThrottle,
    MfaChallenge,
    RecoveryCode,
    Session,
    TotpCredential,
    User,
)
from auth_service.settings import Settings, SettingsError

SESSIONS = "/api/v1/auth/sessions"
ME = "/api/v1/auth/me"
TOTP = "/api/v1/auth/mfa/totp"
CONFIRM = "/api/v1/auth/mfa/totp/confirm"
RECOVERY = "/api/v1/auth/mfa/recovery-codes"
LOGIN_MFA = "/api/v1/auth/login/mfa"


def code_at_step_offset(secret: str, offset: int) -> str:
    """The TOTP code `offset` steps from now (within the ±1 step the service accepts)."""
    return pyotp.TOTP(secret).at(time.time() + 30 * offset)


def enrol(api: Api, token: str) -> tuple[str, list[str]]:
    """Turn MFA on for the token's user; its secret and recovery codes."""
    started = api.client.simulate_post(TOTP, json={"password": PASSWORD}, headers=bearer(token))
    assert started.status_code == 200, started.text
    secret = started.json["secret"]
    confirmed = api.client.simulate_post(
        CONFIRM, json={"code": pyotp.TOTP(secret).now()}, headers=bearer(token)
    )
    assert confirmed.status_code == 200, confirmed.text
    return secret, confirmed.json["recovery_codes"]


def mfa_token(api: Api, email: str) -> str:
    """Log in with the right password; the mfa_token of the mfa-required answer."""
    result = api.login(email)
    body = assert_problem(result, 401, "mfa-required")
    assert result.headers["www-authenticate"] == "Bearer"
    assert result.headers["cache-control"] == "no-store"
    return str(body["mfa_token"])


def login_mfa(client: testing.TestClient, token: str, code: str) -> testing.Result:
    return client.simulate_post(LOGIN_MFA, json={"mfa_token": token, "code": code})


def claims(access_token: str) -> dict[str, Any]:
    return dict(jwt.get_unverified_claims(access_token))


# --- sessions --------------------------------------------------------------------------


def test_sessions_list_newest_first_with_current_and_client(api: Api) -> None:
    user = api.user("ada@example.com")
    second = api.login("ada@example.com", headers={"User-Agent": "phone/1.0"}).json
    listed = api.client.simulate_get(SESSIONS, headers=bearer(user["access_token"]))
    assert listed.status_code == 200, listed.text
    items = listed.json["items"]
    assert len(items) == 2
    newest, oldest = items
    assert newest["id"] == claims(second["access_token"])["sid"]
    assert oldest["id"] == claims(user["access_token"])["sid"]
    assert (newest["current"], oldest["current"]) == (False, True)
    assert newest["user_agent"] == "phone/1.0"
    assert newest["ip_address"] == "127.0.0.1"
    assert newest["created_at"] >= oldest["created_at"]
    assert newest["last_used_at"] is not None and newest["expires_at"] > newest["created_at"]


def test_refresh_moves_last_used_at_and_expiry(api: Api, database_url: str) -> None:
    user = api.user("ada@example.com")
    sid = uuid.UUID(claims(user["access_token"])["sid"])
    execute(
        database_url,
        sqlalchemy.update(Session).where(Session.id == sid).values(last_used_at=ago(3600)),
    )
    before = api.client.simulate_get(SESSIONS, headers=bearer(user["access_token"])).json
    pair = api.client.simulate_post(
        "/api/v1/auth/refresh", json={"refresh_token": user["refresh_token"]}
    ).json
    after = api.client.simulate_get(SESSIONS, headers=bearer(pair["access_token"])).json
    assert after["items"][0]["id"] == str(sid)
    assert after["items"][0]["last_used_at"] > before["items"][0]["last_used_at"]
    assert after["items"][0]["expires_at"] > before["items"][0]["expires_at"]


def test_ending_one_session_stops_its_tokens_at_once(api: Api) -> None:
    user = api.user("ada@example.com")
    other = api.login("ada@example.com").json
    sid = claims(other["access_token"])["sid"]
    ended = api.client.simulate_delete(f"{SESSIONS}/{sid}", headers=bearer(user["access_token"]))
    assert ended.status_code == 204, ended.text
    assert_unauthorized_token(api.client.simulate_get(ME, headers=bearer(other["access_token"])))
    refreshed = api.client.simulate_post(
        "/api/v1/auth/refresh", json={"refresh_token": other["refresh_token"]}
    )
    assert_problem(refreshed, 401, "invalid-refresh-token")
    listed = api.client.simulate_get(SESSIONS, headers=bearer(user["access_token"])).json
    assert [item["id"] for item in listed["items"]] == [claims(user["access_token"])["sid"]]
    # Ended already, unknown, or another user's: all the same 404.
    again = api.client.simulate_delete(f"{SESSIONS}/{sid}", headers=bearer(user["access_token"]))
    assert_problem(again, 404, "session-not-found")
    unknown = f"{SESSIONS}/{uuid.uuid4()}"
    assert_problem(
        api.client.simulate_delete(unknown, headers=bearer(user["access_token"])),
        404,
        "session-not-found",
    )


def test_another_users_session_is_404_and_stays_alive(api: Api) -> None:
    ada = api.user("ada@example.com")
    eve = api.user("eve@example.com")
    sid = claims(ada["access_token"])["sid"]
    refused = api.client.simulate_delete(f"{SESSIONS}/{sid}", headers=bearer(eve["access_token"]))
    assert_problem(refused, 404, "session-not-found")
    assert api.client.simulate_get(ME, headers=bearer(ada["access_token"])).status_code == 200


def test_log_out_everywhere_includes_the_current_session(api: Api, database_url: str) -> None:
    user = api.user("ada@example.com")
    other = api.login("ada@example.com").json
    bystander = api.user("bob@example.com")
    ended = api.client.simulate_delete(SESSIONS, headers=bearer(user["access_token"]))
    assert ended.status_code == 204, ended.text
    for token in (user["access_token"], other["access_token"]):
        assert_unauthorized_token(api.client.simulate_get(ME, headers=bearer(token)))
    live = rows(
        database_url,
        sqlalchemy.select(Session.user_id).where(Session.revoked_at.is_(None)),
    )
    assert [str(row.user_id) for row in live] == [bystander["id"]]


def test_admin_lists_and_ends_a_users_sessions(api: Api, database_url: str) -> None:
    admin = api.admin(database_url)
    user = api.user("ada@example.com")
    path = f"/api/v1/users/{user['id']}/sessions"
    refused = api.client.simulate_get(path, headers=bearer(user["access_token"]))
    assert_problem(refused, 403, "forbidden")
    assert_problem(
        api.client.simulate_delete(path, headers=bearer(user["access_token"])), 403, "forbidden"
    )
    listed = api.client.simulate_get(path, headers=bearer(admin["access_token"]))
    assert listed.status_code == 200, listed.text
    assert [(i["id"], i["current"]) for i in listed.json["items"]] == [
        (claims(user["access_token"])["sid"], False)
    ]
    ended = api.client.simulate_delete(path, headers=bearer(admin["access_token"]))
    assert ended.status_code == 204
    assert_unauthorized_token(api.client.simulate_get(ME, headers=bearer(user["access_token"])))
    assert api.client.simulate_get(path, headers=bearer(admin["access_token"])).json == {
        "items": []
    }
    assert api.client.simulate_get(ME, headers=bearer(admin["access_token"])).status_code == 200
    missing = f"/api/v1/users/{uuid.uuid4()}/sessions"
    assert_problem(
        api.client.simulate_get(missing, headers=bearer(admin["access_token"])),
        404,
        "user-not-found",
    )


# --- TOTP enrolment --------------------------------------------------------------------


def test_enrolment_stores_the_secret_encrypted_and_codes_hashed(
    api: Api, database_url: str
) -> None:
    user = api.user("ada@example.com")
    headers = bearer(user["access_token"])
    wrong = api.client.simulate_post(TOTP, json={"password": "not it"}, headers=headers)
    assert_problem(wrong, 400, "wrong-password", fields=["password"])
    no_pending = api.client.simulate_post(CONFIRM, json={"code": "123456"}, headers=headers)
    assert_problem(no_pending, 409, "mfa-enrolment-not-started")

    started = api.client.simulate_post(TOTP, json={"password": PASSWORD}, headers=headers)
    assert started.status_code == 200, started.text
    assert started.headers["cache-control"] == "no-store"
    secret = started.json["secret"]
    assert started.json["otpauth_uri"].startswith("otpauth://totp/Authgate:ada%40example.com?")
    assert f"secret={secret}" in started.json["otpauth_uri"]
    assert started.json["qr_svg"].startswith("<svg") and "xmlns" in started.json["qr_svg"]
    stored = rows(database_url, sqlalchemy.select(TotpCredential.__table__))
    assert len(stored) == 1 and secret not in stored[0].secret_encrypted
    assert stored[0].confirmed_at is None
    assert api.client.simulate_get(ME, headers=headers).json["mfa_enabled"] is False

    wrong_code = str((int(pyotp.TOTP(secret).now()) + 1) % 1_000_000).zfill(6)
    refused = api.client.simulate_post(CONFIRM, json={"code": wrong_code}, headers=headers)
    assert_problem(refused, 400, "wrong-mfa-code", fields=["code"])
    confirmed = api.client.simulate_post(
        CONFIRM, json={"code": pyotp.TOTP(secret).now()}, headers=headers
    )
    assert confirmed.status_code == 200, confirmed.text
    codes = confirmed.json["recovery_codes"]
    assert len(codes) == 10 and len(set(codes)) == 10
    assert api.client.simulate_get(ME, headers=headers).json["mfa_enabled"] is True
    hashes = {row.code_hash for row in rows(database_url, sqlalchemy.select(RecoveryCode))}
    assert len(hashes) == 10 and not hashes & {*codes, *map(sha256_hex, codes)}
    again = api.client.simulate_post(TOTP, json={"password": PASSWORD}, headers=headers)
    assert_problem(again, 409, "mfa-already-enabled")


# --- login with a second factor --------------------------------------------------------


def test_login_needs_the_second_factor_and_says_so_only_to_the_password_holder(
    api: Api, database_url: str
) -> None:
    user = api.user("ada@example.com")
    secret, _ = enrol(api, user["access_token"])
    wrong = assert_problem(api.login("ada@example.com", "wrong password"), 401)
    assert "mfa_token" not in wrong and wrong["type"].endswith("/invalid-credentials")

    token = mfa_token(api, "ada@example.com")
    stored = rows(database_url, sqlalchemy.select(MfaChallenge.token_hash))
    assert token not in {row.token_hash for row in stored}
    assert sha256_hex(token) in {row.token_hash for row in stored}

    done = login_mfa(api.client, token, code_at_step_offset(secret, 1))
    assert done.status_code == 200, done.text
    assert done.headers["cache-control"] == "no-store"
    assert claims(done.json["access_token"])["amr"] == ["pwd", "otp"]
    assert claims(user["access_token"])["amr"] == ["pwd"]
    me = api.client.simulate_get(ME, headers=bearer(done.json["access_token"]))
    assert me.status_code == 200 and me.json["id"] == user["id"]
    rotated = api.client.simulate_post(
        "/api/v1/auth/refresh", json={"refresh_token": done.json["refresh_token"]}
    )
    assert claims(rotated.json["access_token"])["amr"] == ["pwd", "otp"]

    # The token is single use, and the code of that step cannot be used twice.
    assert_problem(login_mfa(api.client, token, code_at_step_offset(secret, 1)), 401)
    fresh = mfa_token(api, "ada@example.com")
    replay = login_mfa(api.client, fresh, code_at_step_offset(secret, 1))
    assert_problem(replay, 401, "invalid-mfa-code")
    older = login_mfa(api.client, fresh, code_at_step_offset(secret, 0))
    assert_problem(older, 401, "invalid-mfa-code")


def test_recovery_code_works_once_and_regeneration_kills_the_old_set(api: Api) -> None:
    user = api.user("ada@example.com")
    _, codes = enrol(api, user["access_token"])
    typed = codes[0].lower().replace("-", " ")
    first = login_mfa(api.client, mfa_token(api, "ada@example.com"), typed)
    assert first.status_code == 200, first.text
    reused = login_mfa(api.client, mfa_token(api, "ada@example.com"), codes[0])
    assert_problem(reused, 401, "invalid-mfa-code")

    headers = bearer(user["access_token"])
    wrong = api.client.simulate_post(RECOVERY, json={"password": "nope"}, headers=headers)
    assert_problem(wrong, 400, "wrong-password")
    fresh = api.client.simulate_post(RECOVERY, json={"password": PASSWORD}, headers=headers)
    assert fresh.status_code == 200 and len(fresh.json["recovery_codes"]) == 10
    old = login_mfa(api.client, mfa_token(api, "ada@example.com"), codes[1])
    assert_problem(old, 401, "invalid-mfa-code")
    new = login_mfa(api.client, mfa_token(api, "ada@example.com"), fresh.json["recovery_codes"][0])
    assert new.status_code == 200, new.text


def test_five_wrong_codes_kill_the_mfa_token(make_client: Any) -> None:
    # A higher login throttle, so that the token's own limit is what stops the guesses.
    api = Api(make_client(login_max_failures=50))
    user = api.user("ada@example.com")
    _, codes = enrol(api, user["access_token"])
    token = mfa_token(api, "ada@example.com")
    for _ in range(5):
        assert_problem(login_mfa(api.client, token, "000000"), 401, "invalid-mfa-code")
    dead = login_mfa(api.client, token, codes[0])
    assert_problem(dead, 401, "invalid-mfa-token")
    assert login_mfa(api.client, mfa_token(api, "ada@example.com"), codes[0]).status_code == 200


def test_wrong_codes_count_toward_the_login_throttle(make_client: Any) -> None:
    api = Api(make_client(login_max_failures=3))
    user = api.user("ada@example.com")
    enrol(api, user["access_token"])
    for _ in range(3):
        login_mfa(api.client, mfa_token(api, "ada@example.com"), "000000")
    throttled = api.login("ada@example.com")
    assert_problem(throttled, 429, "login-throttled")
    assert int(throttled.headers["retry-after"]) > 0


def test_expired_mfa_token_is_refused(api: Api, database_url: str) -> None:
    user = api.user("ada@example.com")
    _, codes = enrol(api, user["access_token"])
    token = mfa_token(api, "ada@example.com")
    execute(database_url, sqlalchemy.update(MfaChallenge).values(expires_at=ago(1)))
    assert_problem(login_mfa(api.client, token, codes[0]), 401, "invalid-mfa-token")


def test_disable_needs_password_and_code(api: Api, database_url: str) -> None:
    user = api.user("ada@example.com")
    secret, codes = enrol(api, user["access_token"])
    headers = bearer(user["access_token"])

    def disable(password: str, code: str) -> testing.Result:
        return api.client.simulate_delete(
            TOTP, json={"password": password, "code": code}, headers=headers
        )

    assert_problem(disable("nope", codes[0]), 400, "wrong-password")
    assert_problem(disable(PASSWORD, "000000"), 400, "wrong-mfa-code")
    # Both count as failed logins of the account (a stolen token buys no guesses).
    throttles = rows(database_url, sqlalchemy.select(LoginThrottle.failures))
    assert sorted(row.failures for row in throttles) == [2, 2]
    assert disable(PASSWORD, code_at_step_offset(secret, 1)).status_code == 204
    assert rows(database_url, sqlalchemy.select(TotpCredential.__table__)) == []
    assert rows(database_url, sqlalchemy.select(RecoveryCode.__table__)) == []
    assert api.login("ada@example.com").status_code == 200
    assert_problem(disable(PASSWORD, codes[1]), 409, "mfa-not-enabled")


def test_admin_reset_removes_the_factor_and_ends_sessions(api: Api, database_url: str) -> None:
    admin = api.admin(database_url)
    user = api.user("ada@example.com")
    enrol(api, user["access_token"])
    path = f"/api/v1/users/{user['id']}/mfa"
    assert_problem(
        api.client.simulate_delete(path, headers=bearer(user["access_token"])), 403, "forbidden"
    )
    reset = api.client.simulate_delete(path, headers=bearer(admin["access_token"]))
    assert reset.status_code == 204, reset.text
    assert_unauthorized_token(api.client.simulate_get(ME, headers=bearer(user["access_token"])))
    flags = rows(
        database_url, sqlalchemy.select(User.mfa_enabled).where(User.id == uuid.UUID(user["id"]))
    )
    assert [row.mfa_enabled for row in flags] == [False]
    assert api.login("ada@example.com").status_code == 200
    missing = f"/api/v1/users/{uuid.uuid4()}/mfa"
    assert_problem(
        api.client.simulate_delete(missing, headers=bearer(admin["access_token"])),
        404,
        "user-not-found",
    )


# --- the encryption key ----------------------------------------------------------------


def test_a_configured_key_encrypts_the_secret(make_client: Any, database_url: str) -> None:
    key = Fernet.generate_key()
    api = Api(make_client(mfa_encryption_key=key.decode()))
    user = api.user("ada@example.com")
    started = api.client.simulate_post(
        TOTP, json={"password": PASSWORD}, headers=bearer(user["access_token"])
    )
    stored = rows(database_url, sqlalchemy.select(TotpCredential.secret_encrypted))
    decrypted = Fernet(key).decrypt(stored[0].secret_encrypted.encode()).decode()
    assert decrypted == started.json["secret"]


def test_a_bad_key_stops_start_up() -> None:
    with pytest.raises(SettingsError, match="MFA_ENCRYPTION_KEY"):
        Settings.from_env({"MFA_ENCRYPTION_KEY": "not-a-fernet-key"})
