"""A state machine over one user's sessions: Hypothesis picks the order, a model says what
must work, and the service (in process, on each database) must agree after every step.

Steps: login (with a second factor once one is enrolled), refresh, reuse of a rotated
refresh token, ending one session, logging out everywhere, a password change, TOTP
enrolment, an admin's MFA reset, deactivation and reactivation.
Invariants: a revoked session never works again (access token, refresh token, in the
list), at most one live refresh token per session, and the sessions list is exactly the
sessions that work.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

import pyotp
import sqlalchemy
from auth_api import PASSWORD, Api, bearer
from falcon import testing
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from jose import jwt

from auth_service.db.models import RefreshToken, utcnow

OTHER_PASSWORD = "another long passphrase"
# Bounded so both databases run in well under a minute with BCRYPT_ROUNDS=4.
MACHINE_SETTINGS = settings(
    max_examples=20,
    stateful_step_count=15,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


@dataclass
class ModelSession:
    """What the model knows of one session: its tokens and whether it has ended."""

    access_token: str
    refresh_token: str
    used_refresh_tokens: list[str] = field(default_factory=list)
    revoked: bool = False


def sid_of(access_token: str) -> str:
    return str(jwt.get_unverified_claims(access_token)["sid"])


class SessionMachine(RuleBasedStateMachine):
    """Drives the API; `sessions` is the model (sid -> ModelSession)."""

    client: testing.TestClient
    admin_token: str
    database_url: str

    def __init__(self) -> None:
        super().__init__()
        self.api = Api(self.client)
        self.sessions: dict[str, ModelSession] = {}
        self.password = PASSWORD
        self.active = True
        # None while MFA is off; else the recovery codes not used yet (one per MFA login).
        self.recovery_codes: list[str] | None = None
        self.email = f"machine-{uuid.uuid4().hex[:12]}@example.com"
        created = self.api.register(self.email, self.password)
        assert created.status_code == 201, created.text
        self.user_id = created.json["id"]

    # --- helpers -----------------------------------------------------------------------

    def live(self) -> list[str]:
        return sorted(sid for sid, s in self.sessions.items() if not s.revoked)

    def revoke_all(self, keep: str | None = None) -> None:
        for sid, session in self.sessions.items():
            if sid != keep:
                session.revoked = True

    def call(self, method: str, path: str, token: str, **kw: Any) -> testing.Result:
        return self.client.simulate_request(method, path, headers=bearer(token), **kw)

    # --- rules -------------------------------------------------------------------------

    @initialize()
    def first_login(self) -> None:
        self.login()

    @rule()
    def login(self) -> None:
        result = self.api.login(self.email, self.password)
        if not self.active:
            assert result.status_code == 403, result.text
            return
        if self.recovery_codes is not None:
            assert result.status_code == 401, result.text
            assert result.json["type"].endswith("/mfa-required")
            if not self.recovery_codes:
                return  # no code left in the model: the login stops at the second step
            result = self.client.simulate_post(
                "/api/v1/auth/login/mfa",
                json={"mfa_token": result.json["mfa_token"], "code": self.recovery_codes.pop()},
            )
        assert result.status_code == 200, result.text
        pair = result.json
        amr = jwt.get_unverified_claims(pair["access_token"])["amr"]
        assert amr == (["pwd"] if self.recovery_codes is None else ["pwd", "otp"])
        self.sessions[sid_of(pair["access_token"])] = ModelSession(
            pair["access_token"], pair["refresh_token"]
        )

    @precondition(lambda self: self.sessions)
    @rule(data=st.data())
    def refresh(self, data: st.DataObject) -> None:
        sid = data.draw(st.sampled_from(sorted(self.sessions)))
        session = self.sessions[sid]
        result = self.client.simulate_post(
            "/api/v1/auth/refresh", json={"refresh_token": session.refresh_token}
        )
        if session.revoked:
            assert result.status_code == 401, result.text
            return
        assert result.status_code == 200, result.text
        assert sid_of(result.json["access_token"]) == sid
        session.used_refresh_tokens.append(session.refresh_token)
        session.refresh_token = result.json["refresh_token"]
        session.access_token = result.json["access_token"]

    @precondition(lambda self: any(s.used_refresh_tokens for s in self.sessions.values()))
    @rule(data=st.data())
    def reuse(self, data: st.DataObject) -> None:
        sid = data.draw(
            st.sampled_from(sorted(k for k, s in self.sessions.items() if s.used_refresh_tokens))
        )
        session = self.sessions[sid]
        stale = data.draw(st.sampled_from(session.used_refresh_tokens))
        result = self.client.simulate_post("/api/v1/auth/refresh", json={"refresh_token": stale})
        # Grace 0: any second use is reuse, which ends the whole session.
        assert result.status_code == 401, result.text
        session.revoked = True

    @precondition(lambda self: len(self.live()) >= 1 and self.sessions)
    @rule(data=st.data())
    def end_one(self, data: st.DataObject) -> None:
        caller = data.draw(st.sampled_from(self.live()))
        target = data.draw(st.sampled_from(sorted(self.sessions)))
        result = self.call(
            "DELETE", f"/api/v1/auth/sessions/{target}", self.sessions[caller].access_token
        )
        expected = 404 if self.sessions[target].revoked else 204
        assert result.status_code == expected, result.text
        self.sessions[target].revoked = True

    @precondition(lambda self: self.live())
    @rule(data=st.data())
    def end_all(self, data: st.DataObject) -> None:
        caller = data.draw(st.sampled_from(self.live()))
        result = self.call("DELETE", "/api/v1/auth/sessions", self.sessions[caller].access_token)
        assert result.status_code == 204, result.text
        self.revoke_all()

    @precondition(lambda self: self.live())
    @rule(data=st.data())
    def change_password(self, data: st.DataObject) -> None:
        caller = data.draw(st.sampled_from(self.live()))
        new = OTHER_PASSWORD if self.password == PASSWORD else PASSWORD
        result = self.call(
            "PUT",
            "/api/v1/users/me/password",
            self.sessions[caller].access_token,
            json={"current_password": self.password, "new_password": new},
        )
        assert result.status_code == 204, result.text
        self.password = new
        self.revoke_all(keep=caller)

    @precondition(lambda self: self.live() and self.recovery_codes is None)
    @rule(data=st.data())
    def enrol_mfa(self, data: st.DataObject) -> None:
        token = self.sessions[data.draw(st.sampled_from(self.live()))].access_token
        started = self.call(
            "POST", "/api/v1/auth/mfa/totp", token, json={"password": self.password}
        )
        assert started.status_code == 200, started.text
        code = pyotp.TOTP(started.json["secret"]).now()
        confirmed = self.call("POST", "/api/v1/auth/mfa/totp/confirm", token, json={"code": code})
        assert confirmed.status_code == 200, confirmed.text
        self.recovery_codes = confirmed.json["recovery_codes"]

    @rule()
    def mfa_reset(self) -> None:
        result = self.call("DELETE", f"/api/v1/users/{self.user_id}/mfa", self.admin_token)
        assert result.status_code == 204, result.text
        self.recovery_codes = None
        self.revoke_all()

    @rule(active=st.booleans())
    def set_active(self, active: bool) -> None:
        result = self.call(
            "PUT", f"/api/v1/users/{self.user_id}", self.admin_token, json={"is_active": active}
        )
        assert result.status_code == 200, result.text
        self.active = active
        if not active:
            self.revoke_all()

    # --- invariants --------------------------------------------------------------------

    @invariant()
    def access_tokens_work_exactly_for_live_sessions(self) -> None:
        for sid, session in self.sessions.items():
            me = self.call("GET", "/api/v1/auth/me", session.access_token)
            assert me.status_code == (401 if session.revoked else 200), (sid, me.text)

    @invariant()
    def mfa_flag_matches(self) -> None:
        user = self.call("GET", f"/api/v1/users/{self.user_id}", self.admin_token)
        assert user.json["mfa_enabled"] is (self.recovery_codes is not None)

    @invariant()
    def the_list_is_what_works(self) -> None:
        listed = self.call("GET", f"/api/v1/users/{self.user_id}/sessions", self.admin_token)
        assert listed.status_code == 200, listed.text
        assert sorted(item["id"] for item in listed.json["items"]) == self.live()
        for sid in self.live():
            own = self.call("GET", "/api/v1/auth/sessions", self.sessions[sid].access_token)
            ids = {item["id"]: item["current"] for item in own.json["items"]}
            assert sorted(ids) == self.live() and ids[sid] is True

    @invariant()
    def at_most_one_live_refresh_token_per_session(self) -> None:
        engine = sqlalchemy.create_engine(self.database_url)
        try:
            with engine.connect() as connection:
                counts = connection.execute(
                    sqlalchemy.select(RefreshToken.session_id, sqlalchemy.func.count())
                    .where(RefreshToken.used_at.is_(None), RefreshToken.expires_at > utcnow())
                    .where(RefreshToken.user_id == uuid.UUID(self.user_id))
                    .group_by(RefreshToken.session_id)
                ).all()
        finally:
            engine.dispose()
        assert all(count <= 1 for _, count in counts), counts


def test_sessions_state_machine(make_client: Any, database_url: str) -> None:
    client = make_client(refresh_reuse_grace_seconds=0)
    admin = Api(client).admin(database_url)
    machine = type(
        "BoundSessionMachine",
        (SessionMachine,),
        {"client": client, "admin_token": admin["access_token"], "database_url": database_url},
    )
    run_state_machine_as_test(machine, settings=MACHINE_SETTINGS)
