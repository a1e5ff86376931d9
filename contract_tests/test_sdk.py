"""SDK proof: a Python client generated from the spec runs a real flow through the gateway.

openapi-python-client generates the package into a temporary directory; a spec change
that breaks generation, the client's types or its parsing of real answers fails here.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pyotp
import pytest
from contract_support import ADMIN_EMAIL, ADMIN_PASSWORD, SPEC_PATH, Server

GENERATOR = Path(sys.executable).with_name("openapi-python-client")
PACKAGE = "authgate_client"


@pytest.fixture(scope="module")
def sdk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModuleType]:
    """Generate the client from openapi/auth.yaml and import it from a temp dir."""
    if not GENERATOR.exists():
        pytest.fail("openapi-python-client is not installed (pip install openapi-python-client)")
    out = tmp_path_factory.mktemp("sdk")
    env = {**os.environ, "PATH": f"{GENERATOR.parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    result = subprocess.run(
        [
            str(GENERATOR),
            "generate",
            "--path",
            str(SPEC_PATH),
            "--meta",
            "none",
            "--output-path",
            str(out / PACKAGE),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # Any warning means part of the spec did not become client code.
    assert "Warning" not in result.stdout, result.stdout
    sys.path.insert(0, str(out))
    try:
        yield importlib.import_module(PACKAGE)
    finally:
        sys.path.remove(str(out))
        for name in [n for n in sys.modules if n == PACKAGE or n.startswith(PACKAGE + ".")]:
            del sys.modules[name]


def submodule(name: str) -> Any:
    """A module of the generated package."""
    return importlib.import_module(f"{PACKAGE}.{name}")


def test_generated_client_runs_a_real_flow_through_the_gateway(
    sdk: ModuleType, gateway_service: Server
) -> None:
    """Register, log in, me, email verification, refresh, logout, admin paging, typed
    400, 401 and 422 problems."""
    models = submodule("models")
    auth = {
        op: submodule(f"api.auth.{op}")
        for op in (
            "register",
            "login",
            "get_me",
            "refresh",
            "logout",
            "verify_email",
            "resend_verification_email",
        )
    }
    list_users = submodule("api.users.list_users")
    client = sdk.Client(base_url=gateway_service.url, raise_on_unexpected_status=True)
    email = f"sdk-{uuid.uuid4().hex[:12]}@example.com"
    password = "generated client passphrase"

    created = auth["register"].sync(
        client=client, body=models.RegisterRequest(email=email, password=password, full_name="SDK")
    )
    assert isinstance(created, models.User) and created.email == email

    tokens = auth["login"].sync(
        client=client, body=models.LoginRequest(email=email, password=password)
    )
    assert isinstance(tokens, models.TokenPair) and tokens.token_type == "bearer"

    user_client = sdk.AuthenticatedClient(
        base_url=gateway_service.url, token=tokens.access_token, raise_on_unexpected_status=True
    )
    me = auth["get_me"].sync(client=user_client)
    assert isinstance(me, models.User) and me.id == created.id
    assert me.email_verified is False  # the link went to the mailbox, not to us

    # Email verification: a new link on request; a token that was never mailed is refused.
    resent = auth["resend_verification_email"].sync(client=user_client)
    assert isinstance(resent, models.Accepted) and resent.detail
    forged = auth["verify_email"].sync_detailed(
        client=client, body=models.EmailVerificationConfirm(token="never-mailed")
    )
    assert forged.status_code == 400 and isinstance(forged.parsed, models.Problem)
    assert forged.parsed.type_ == "https://authgate.dev/problems/invalid-verification-token"

    rotated = auth["refresh"].sync(
        client=client, body=models.RefreshRequest(refresh_token=tokens.refresh_token)
    )
    assert isinstance(rotated, models.TokenPair)
    assert rotated.refresh_token != tokens.refresh_token

    logged_out = auth["logout"].sync_detailed(
        client=client, body=models.LogoutRequest(refresh_token=rotated.refresh_token)
    )
    assert logged_out.status_code == 204

    # Typed 401: the session is over, so its access token is refused (gateway or auth).
    refused = auth["get_me"].sync_detailed(
        client=sdk.AuthenticatedClient(base_url=gateway_service.url, token=rotated.access_token)
    )
    assert refused.status_code == 401
    assert isinstance(refused.parsed, models.Problem) and refused.parsed.status == 401
    assert refused.headers["WWW-Authenticate"].lower().startswith("bearer")

    # Typed 422: a password the spec allows in characters but not in bytes.
    invalid = auth["register"].sync_detailed(
        client=client, body=models.RegisterRequest(email=f"x{email}", password="é" * 40)
    )
    assert invalid.status_code == 422
    assert isinstance(invalid.parsed, models.Problem)
    assert [error.field for error in invalid.parsed.errors] == ["password"]

    # Admin paging: two pages of one user each, consistent totals.
    admin_tokens = auth["login"].sync(
        client=client, body=models.LoginRequest(email=ADMIN_EMAIL, password=ADMIN_PASSWORD)
    )
    admin = sdk.AuthenticatedClient(base_url=gateway_service.url, token=admin_tokens.access_token)
    first = list_users.sync(client=admin, offset=0, limit=1)
    second = list_users.sync(client=admin, offset=1, limit=1)
    assert isinstance(first, models.UserPage) and isinstance(second, models.UserPage)
    assert first.total >= 2 and first.total == second.total
    assert (first.limit, len(first.items), second.offset) == (1, 1, 1)
    assert first.items[0].id != second.items[0].id
    # And a non-admin gets a typed 403.
    forbidden = list_users.sync_detailed(client=user_client_for(sdk, gateway_service, models, auth))
    assert forbidden.status_code == 403 and isinstance(forbidden.parsed, models.Problem)


def user_client_for(sdk: ModuleType, server: Server, models: Any, auth: dict[str, Any]) -> Any:
    """A client authenticated as a brand-new regular user."""
    client = sdk.Client(base_url=server.url)
    email = f"sdk-{uuid.uuid4().hex[:12]}@example.com"
    auth["register"].sync(
        client=client, body=models.RegisterRequest(email=email, password="p" * 12)
    )
    tokens = auth["login"].sync(
        client=client, body=models.LoginRequest(email=email, password="p" * 12)
    )
    return sdk.AuthenticatedClient(base_url=server.url, token=tokens.access_token)


def test_generated_client_runs_sessions_and_mfa_flows(
    sdk: ModuleType, gateway_service: Server
) -> None:
    """Sessions list/end, TOTP enrol/confirm, the mfa-required login and its second step."""
    models = submodule("models")
    login = submodule("api.auth.login")
    register = submodule("api.auth.register")
    sessions = {
        op: submodule(f"api.sessions.{op}")
        for op in ("list_sessions", "end_session", "end_all_sessions")
    }
    mfa = {
        op: submodule(f"api.mfa.{op}")
        for op in ("start_totp_enrolment", "confirm_totp_enrolment", "login_mfa", "disable_totp")
    }
    client = sdk.Client(base_url=gateway_service.url, raise_on_unexpected_status=True)
    email = f"sdk-mfa-{uuid.uuid4().hex[:12]}@example.com"
    password = "generated client passphrase"
    register.sync(client=client, body=models.RegisterRequest(email=email, password=password))
    credentials = models.LoginRequest(email=email, password=password)
    first = login.sync(client=client, body=credentials)
    login.sync(client=client, body=credentials)  # a second session (another device)

    def as_user(tokens: Any) -> Any:
        return sdk.AuthenticatedClient(
            base_url=gateway_service.url, token=tokens.access_token, raise_on_unexpected_status=True
        )

    listed = sessions["list_sessions"].sync(client=as_user(first))
    assert isinstance(listed, models.SessionList) and len(listed.items) == 2
    assert [s.current for s in listed.items] == [False, True]  # newest (second) first
    ended = sessions["end_session"].sync_detailed(listed.items[0].id, client=as_user(first))
    assert ended.status_code == 204
    gone = sessions["end_session"].sync_detailed(
        listed.items[0].id, client=sdk.AuthenticatedClient(gateway_service.url, first.access_token)
    )
    assert gone.status_code == 404 and isinstance(gone.parsed, models.Problem)

    enrolment = mfa["start_totp_enrolment"].sync(
        client=as_user(first), body=models.PasswordConfirmation(password=password)
    )
    assert isinstance(enrolment, models.TotpEnrolment)
    totp = pyotp.TOTP(enrolment.secret)
    codes = mfa["confirm_totp_enrolment"].sync(
        client=as_user(first), body=models.MfaCode(code=totp.now())
    )
    assert isinstance(codes, models.RecoveryCodes) and len(codes.recovery_codes) == 10

    challenged = login.sync_detailed(client=sdk.Client(gateway_service.url), body=credentials)
    assert challenged.status_code == 401 and isinstance(challenged.parsed, models.Problem)
    assert challenged.parsed.type_.endswith("/mfa-required") and challenged.parsed.mfa_token
    tokens = mfa["login_mfa"].sync(
        client=client,
        body=models.MfaLoginRequest(
            mfa_token=challenged.parsed.mfa_token, code=codes.recovery_codes[0]
        ),
    )
    assert isinstance(tokens, models.TokenPair)

    off = mfa["disable_totp"].sync_detailed(
        client=as_user(tokens),
        body=models.TotpDisable(password=password, code=totp.at(time.time() + 30)),
    )
    assert off.status_code == 204
    everywhere = sessions["end_all_sessions"].sync_detailed(client=as_user(tokens))
    assert everywhere.status_code == 204
    refused = sessions["list_sessions"].sync_detailed(
        client=sdk.AuthenticatedClient(gateway_service.url, tokens.access_token)
    )
    assert refused.status_code == 401 and isinstance(refused.parsed, models.Problem)


def test_generated_client_reads_the_audit_trail(sdk: ModuleType, gateway_service: Server) -> None:
    """Own events, the admin's filtered trail, and a cursor walk, all typed."""
    models = submodule("models")
    login = submodule("api.auth.login")
    register = submodule("api.auth.register")
    my_events = submodule("api.auth.list_my_events")
    audit_events = submodule("api.users.list_audit_events")
    event_type = models.ListAuditEventsTypeItem
    client = sdk.Client(base_url=gateway_service.url, raise_on_unexpected_status=True)
    email = f"sdk-audit-{uuid.uuid4().hex[:12]}@example.com"
    password = "generated client passphrase"
    created = register.sync(
        client=client, body=models.RegisterRequest(email=email, password=password)
    )
    wrong = login.sync_detailed(
        client=sdk.Client(gateway_service.url),
        body=models.LoginRequest(email=email, password="not the passphrase"),
    )
    assert wrong.status_code == 401
    tokens = login.sync(client=client, body=models.LoginRequest(email=email, password=password))
    user = sdk.AuthenticatedClient(base_url=gateway_service.url, token=tokens.access_token)

    mine = my_events.sync(client=user)
    assert isinstance(mine, models.AuditEventPage) and mine.next_cursor is None
    assert [str(e.type_) for e in mine.items] == ["login.succeeded", "login.failed", "user.created"]
    assert all(str(e.user_id) == str(created.id) for e in mine.items)
    forbidden = audit_events.sync_detailed(client=user)
    assert forbidden.status_code == 403 and isinstance(forbidden.parsed, models.Problem)

    admin_tokens = login.sync(
        client=client, body=models.LoginRequest(email=ADMIN_EMAIL, password=ADMIN_PASSWORD)
    )
    admin = sdk.AuthenticatedClient(base_url=gateway_service.url, token=admin_tokens.access_token)
    seen: list[str] = []
    cursor: Any = None
    while True:
        page = audit_events.sync(
            client=admin,
            user_id=created.id,
            type_=[event_type.LOGIN_FAILED, event_type.USER_CREATED],
            limit=1,
            **({"cursor": cursor} if cursor else {}),
        )
        assert isinstance(page, models.AuditEventPage)
        seen += [str(e.type_) for e in page.items]
        cursor = page.next_cursor
        if not cursor:
            break
    assert seen == ["login.failed", "user.created"]


def test_generated_client_manages_an_oauth_client(sdk: ModuleType, gateway_service: Server) -> None:
    """Admin: register a confidential client (secret once), read it, rotate, delete; 404 after."""
    models = submodule("models")
    ops = {
        op: submodule(f"api.oauth_clients.{op}")
        for op in (
            "create_oauth_client",
            "get_oauth_client",
            "rotate_oauth_client_secret",
            "delete_oauth_client",
        )
    }
    login = submodule("api.auth.login")
    anonymous = sdk.Client(base_url=gateway_service.url, raise_on_unexpected_status=True)
    tokens = login.sync(
        client=anonymous, body=models.LoginRequest(email=ADMIN_EMAIL, password=ADMIN_PASSWORD)
    )
    admin = sdk.AuthenticatedClient(
        base_url=gateway_service.url, token=tokens.access_token, raise_on_unexpected_status=True
    )
    created = ops["create_oauth_client"].sync(
        client=admin,
        body=models.OAuthClientCreate(
            name=f"SDK app {uuid.uuid4().hex[:8]}",
            client_type=models.OAuthClientType.CONFIDENTIAL,
            redirect_uris=["https://app.example.com/callback"],
            grant_types=[models.GrantTypesItem.AUTHORIZATION_CODE],
            scopes=["openid"],
        ),
    )
    assert isinstance(created, models.OAuthClientCreated)
    assert isinstance(created.client_secret, str) and len(created.client_secret) == 43

    read = ops["get_oauth_client"].sync(created.client_id, client=admin)
    assert isinstance(read, models.OAuthClient)
    assert read.redirect_uris == ["https://app.example.com/callback"]
    assert "client_secret" not in read.to_dict()

    rotated = ops["rotate_oauth_client_secret"].sync(created.client_id, client=admin)
    assert isinstance(rotated, models.OAuthClientSecret)
    assert rotated.client_secret != created.client_secret

    deleted = ops["delete_oauth_client"].sync_detailed(created.client_id, client=admin)
    assert deleted.status_code == 204
    gone = ops["get_oauth_client"].sync_detailed(
        created.client_id,
        client=sdk.AuthenticatedClient(base_url=gateway_service.url, token=tokens.access_token),
    )
    assert gone.status_code == 404 and isinstance(gone.parsed, models.Problem)
