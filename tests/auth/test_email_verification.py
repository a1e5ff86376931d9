"""Email verification in-process, with a real SMTP server (aiosmtpd), on both databases.

The link in the mail is the only way to the token: each test reads it from the mail that
arrived, then checks the answers and the rows in the database.
"""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy
from auth_api import PASSWORD, Api, bearer, set_user_flags
from authcheck import ago, assert_problem, execute, rows, sha256_hex, user_row
from prometheus_client.parser import text_string_to_metric_families
from smtp_inbox import (
    SIGN_UP_ATTEMPT_SUBJECT,
    VERIFY_SUBJECT,
    VERIFY_URL,
    Inbox,
    verification_token_from,
)

from auth_service.db.models import AuditEvent, EmailVerificationToken, MailOutbox

VERIFY = "/api/v1/auth/verify-email"
RESEND = "/api/v1/auth/verify-email/resend"
REGISTER_ACCEPTED = {"detail": "Check your inbox: we sent a mail to this address."}
RESEND_ACCEPTED = {
    "detail": "If your email address is not verified yet, a new verification link has been sent."
}


def mailing(make_client: Any, inbox: tuple[Inbox, int], **overrides: Any) -> Api:
    _, port = inbox
    return Api(
        make_client(
            smtp_host="127.0.0.1",
            smtp_port=port,
            smtp_from="noreply@authgate.test",
            email_verification_url=VERIFY_URL,
            **overrides,
        )
    )


@pytest.fixture
def api(make_client: Any, inbox: tuple[Inbox, int]) -> Api:
    """REQUIRE_EMAIL_VERIFICATION off (the default)."""
    return mailing(make_client, inbox)


@pytest.fixture
def strict_api(make_client: Any, inbox: tuple[Inbox, int]) -> Api:
    """REQUIRE_EMAIL_VERIFICATION on."""
    return mailing(make_client, inbox, require_email_verification=True)


def verification_token(mail: Inbox, to: str, count: int = 1) -> str:
    """The token of the `count`-th verification mail, which must have gone to `to`."""
    recipients, message = mail.wait_for(count, subject=VERIFY_SUBJECT)[count - 1]
    assert recipients == [to]
    assert message["To"] == to
    return verification_token_from(message)


def verify(api: Api, token: str) -> Any:
    return api.client.simulate_post(VERIFY, json={"token": token})


def outbox_subjects(database_url: str, to: str) -> list[str]:
    found = rows(
        database_url,
        sqlalchemy.select(MailOutbox.subject)
        .where(MailOutbox.recipient == to)
        .order_by(MailOutbox.created_at),
    )
    return [row.subject for row in found]


def test_register_mails_a_link_that_verifies_the_address_once(
    api: Api, inbox: tuple[Inbox, int], database_url: str
) -> None:
    mail, _ = inbox
    registered = api.register("ada@example.com", full_name="Ada")
    assert registered.status_code == 201, registered.text
    assert registered.json["email_verified"] is False
    assert user_row(database_url, "ada@example.com").email_verified is False

    token = verification_token(mail, "ada@example.com")
    stored = rows(database_url, sqlalchemy.select(EmailVerificationToken.__table__))
    assert len(stored) == 1
    assert stored[0].token_hash == sha256_hex(token)
    assert stored[0].email == "ada@example.com"
    assert stored[0].used_at is None
    assert token not in str(tuple(stored[0]))
    lifetime = stored[0].expires_at - stored[0].created_at
    assert 23.9 * 3600 < lifetime.total_seconds() <= 24 * 3600

    # Unverified accounts sign in while REQUIRE_EMAIL_VERIFICATION is off.
    tokens = api.login("ada@example.com")
    assert tokens.status_code == 200, tokens.text

    done = verify(api, token)
    assert done.status_code == 204, done.text
    assert user_row(database_url, "ada@example.com").email_verified is True
    used = rows(database_url, sqlalchemy.select(EmailVerificationToken.used_at))
    assert used[0].used_at is not None
    me = api.client.simulate_get("/api/v1/auth/me", headers=bearer(tokens.json["access_token"]))
    assert me.json["email_verified"] is True

    assert_problem(verify(api, token), 400, "invalid-verification-token")
    assert len(mail.with_subject(VERIFY_SUBJECT)) == 1
    # One `email.verified`, by the user, in the verifying transaction; the refused reuse
    # after it recorded nothing.
    user_id = user_row(database_url, "ada@example.com").id
    events = rows(
        database_url,
        sqlalchemy.select(AuditEvent.__table__).where(AuditEvent.event_type == "email.verified"),
    )
    assert [(e.user_id, e.actor_id) for e in events] == [(user_id, user_id)]
    assert token not in str([tuple(e) for e in events])


def test_expired_or_unknown_token_is_refused(
    api: Api, inbox: tuple[Inbox, int], database_url: str
) -> None:
    mail, _ = inbox
    assert api.register("ada@example.com").status_code == 201
    token = verification_token(mail, "ada@example.com")
    execute(
        database_url,
        sqlalchemy.update(EmailVerificationToken)
        .where(EmailVerificationToken.token_hash == sha256_hex(token))
        .values(expires_at=ago(1)),
    )
    assert_problem(verify(api, token), 400, "invalid-verification-token")
    assert_problem(verify(api, "never-issued"), 400, "invalid-verification-token")
    assert user_row(database_url, "ada@example.com").email_verified is False
    assert not rows(
        database_url,
        sqlalchemy.select(AuditEvent.__table__).where(AuditEvent.event_type == "email.verified"),
    )


def test_resend_mails_a_new_link_and_kills_the_old_one(
    api: Api, inbox: tuple[Inbox, int], database_url: str
) -> None:
    mail, _ = inbox
    ada = api.user("ada@example.com")
    first = verification_token(mail, "ada@example.com")

    resent = api.client.simulate_post(RESEND, headers=bearer(ada["access_token"]))
    assert resent.status_code == 202, resent.text
    assert resent.json == RESEND_ACCEPTED
    second = verification_token(mail, "ada@example.com", count=2)
    assert second != first

    assert_problem(verify(api, first), 400, "invalid-verification-token")
    assert verify(api, second).status_code == 204
    assert user_row(database_url, "ada@example.com").email_verified is True

    # Verified: the same answer, and nothing more in the outbox.
    again = api.client.simulate_post(RESEND, headers=bearer(ada["access_token"]))
    assert again.status_code == 202
    assert again.json == RESEND_ACCEPTED
    assert outbox_subjects(database_url, "ada@example.com") == [VERIFY_SUBJECT] * 2


def test_resend_needs_a_token(api: Api) -> None:
    assert_problem(api.client.simulate_post(RESEND), 401, "missing-token")


def test_changing_ones_email_unverifies_it_and_mails_the_new_address(
    api: Api, inbox: tuple[Inbox, int], database_url: str
) -> None:
    mail, _ = inbox
    ada = api.user("ada@example.com")
    assert verify(api, verification_token(mail, "ada@example.com")).status_code == 204

    changed = api.client.simulate_put(
        f"/api/v1/users/{ada['id']}",
        json={"email": "Ada@New.example"},
        headers=bearer(ada["access_token"]),
    )
    assert changed.status_code == 200, changed.text
    assert changed.json["email"] == "ada@new.example"
    assert changed.json["email_verified"] is False
    assert user_row(database_url, "ada@new.example").email_verified is False
    token = verification_token(mail, "ada@new.example", count=2)

    # The session goes on; the new address is proven by its own link.
    me = api.client.simulate_get("/api/v1/auth/me", headers=bearer(ada["access_token"]))
    assert me.json["email_verified"] is False
    assert verify(api, token).status_code == 204
    assert user_row(database_url, "ada@new.example").email_verified is True

    # Setting the same address again changes nothing and mails nobody.
    same = api.client.simulate_put(
        f"/api/v1/users/{ada['id']}",
        json={"email": "ada@new.example", "full_name": "Ada"},
        headers=bearer(ada["access_token"]),
    )
    assert same.json["email_verified"] is True
    assert outbox_subjects(database_url, "ada@new.example") == [VERIFY_SUBJECT]


def test_a_link_for_an_old_address_verifies_nothing(
    api: Api, inbox: tuple[Inbox, int], database_url: str
) -> None:
    mail, _ = inbox
    ada = api.user("ada@example.com")
    old = verification_token(mail, "ada@example.com")
    changed = api.client.simulate_put(
        f"/api/v1/users/{ada['id']}",
        json={"email": "ada@new.example"},
        headers=bearer(ada["access_token"]),
    )
    assert changed.status_code == 200
    assert_problem(verify(api, old), 400, "invalid-verification-token")
    assert user_row(database_url, "ada@new.example").email_verified is False
    assert verify(api, verification_token(mail, "ada@new.example", count=2)).status_code == 204


def test_admin_created_users_are_verified_and_an_admin_email_change_is_not(
    api: Api, inbox: tuple[Inbox, int], database_url: str
) -> None:
    mail, _ = inbox
    admin = api.admin(database_url)
    created = api.client.simulate_post(
        "/api/v1/users",
        json={"email": "bob@example.com", "password": PASSWORD},
        headers=bearer(admin["access_token"]),
    )
    assert created.status_code == 201, created.text
    assert created.json["email_verified"] is True
    assert outbox_subjects(database_url, "bob@example.com") == []

    moved = api.client.simulate_put(
        f"/api/v1/users/{created.json['id']}",
        json={"email": "bob@new.example"},
        headers=bearer(admin["access_token"]),
    )
    assert moved.status_code == 200, moved.text
    assert moved.json["email_verified"] is False
    verification_token(mail, "bob@new.example", count=2)  # the admin's own came first


def test_verification_is_not_required_for_sign_in_by_default(
    api: Api, inbox: tuple[Inbox, int]
) -> None:
    assert api.register("ada@example.com").status_code == 201
    assert api.login("ada@example.com").status_code == 200
    taken = api.register("ada@example.com")
    assert_problem(taken, 409, "email-taken")


# REQUIRE_EMAIL_VERIFICATION=true


def test_required_register_answers_alike_for_new_and_taken_addresses(
    strict_api: Api, inbox: tuple[Inbox, int], database_url: str
) -> None:
    api, (mail, _) = strict_api, inbox
    new = api.register("ada@example.com")
    assert new.status_code == 202, new.text
    assert new.json == REGISTER_ACCEPTED
    assert verify(api, verification_token(mail, "ada@example.com")).status_code == 204
    before = user_row(database_url, "ada@example.com")

    taken = api.register("ADA@example.com", "another password")
    assert taken.status_code == new.status_code
    assert taken.json == new.json
    assert taken.headers.get("location") is None and new.headers.get("location") is None
    assert sorted(taken.headers) == sorted(new.headers)
    (recipients, message), *_ = mail.wait_for(1, subject=SIGN_UP_ATTEMPT_SUBJECT)
    assert recipients == ["ada@example.com"]
    assert "already has one" in message.get_content()
    # Nothing about the account changed: not its password, not its verification.
    after = user_row(database_url, "ada@example.com")
    assert (after.hashed_password, after.email_verified) == (before.hashed_password, True)
    assert api.login("ada@example.com", "another password").status_code == 401
    assert api.login("ada@example.com").status_code == 200


def test_required_login_refuses_an_unverified_address_after_the_password(
    strict_api: Api, inbox: tuple[Inbox, int], database_url: str
) -> None:
    api, (mail, _) = strict_api, inbox
    assert api.register("ada@example.com").status_code == 202
    token = verification_token(mail, "ada@example.com")

    assert_problem(api.login("ada@example.com", "wrong password!"), 401, "invalid-credentials")
    refused = assert_problem(api.login("ada@example.com"), 403, "email-not-verified")
    assert "access_token" not in refused
    assert rows(database_url, sqlalchemy.select(sqlalchemy.text("id FROM sessions"))) == []

    assert verify(api, token).status_code == 204
    assert api.login("ada@example.com").status_code == 200
    assert login_outcomes(api) == {"bad_credentials": 1, "unverified": 1, "success": 1}


def login_outcomes(api: Api) -> dict[str, float]:
    """authgate_logins_total by outcome, the ones above zero (as /metrics exports them)."""
    scraped = api.client.simulate_get("/metrics").text
    return {
        sample.labels["outcome"]: sample.value
        for family in text_string_to_metric_families(scraped)
        for sample in family.samples
        if sample.name == "authgate_logins_total" and sample.value
    }


def test_required_register_of_an_unverified_address_mails_a_fresh_link(
    strict_api: Api, inbox: tuple[Inbox, int], database_url: str
) -> None:
    # The owner cannot sign in to ask for a new link: registering again is the way.
    api, (mail, _) = strict_api, inbox
    assert api.register("ada@example.com").status_code == 202
    first = verification_token(mail, "ada@example.com")
    again = api.register("ada@example.com")
    assert again.status_code == 202 and again.json == REGISTER_ACCEPTED
    second = verification_token(mail, "ada@example.com", count=2)
    assert mail.with_subject(SIGN_UP_ATTEMPT_SUBJECT) == []
    assert_problem(verify(api, first), 400, "invalid-verification-token")
    assert verify(api, second).status_code == 204
    assert api.login("ada@example.com").status_code == 200


def test_required_login_checks_the_address_before_the_second_factor(
    strict_api: Api, inbox: tuple[Inbox, int], database_url: str
) -> None:
    api, _ = strict_api, inbox
    assert api.register("ada@example.com").status_code == 202
    user_id = user_row(database_url, "ada@example.com").id
    set_user_flags(database_url, str(user_id), mfa_enabled=True)
    refused = assert_problem(api.login("ada@example.com"), 403, "email-not-verified")
    assert "mfa_token" not in refused
    assert rows(database_url, sqlalchemy.select(sqlalchemy.text("id FROM mfa_challenges"))) == []
