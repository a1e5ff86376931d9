"""Migrations agree with the models, downgrade cleanly, and the schema enforces its rules.

Runs on a real PostgreSQL (a throwaway database per test) and on SQLite files.
"""

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError, StatementError
from sqlalchemy.orm import Session as DbSession
from sqlalchemy.orm import sessionmaker

from auth_service.db import migrations
from auth_service.db.base import utcnow
from auth_service.db.models import (
    Base,
    LoginThrottle,
    PasswordResetToken,
    RefreshToken,
    Session,
    User,
)
from auth_service.db.session import make_engine, make_sessionmaker

ADMIN_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """Create a throwaway PostgreSQL database and drop it afterwards."""
    name = f"test_{uuid.uuid4().hex}"
    admin = sa.create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        yield f"postgresql+psycopg2://postgres@127.0.0.1:5432/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=[pytest.param("postgresql", marks=pytest.mark.postgres), "sqlite"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Return an empty database URL on each backend."""
    if request.param == "postgresql":
        return request.getfixturevalue("postgres_url")
    # A nested directory also checks that make_engine creates the file's parent.
    return f"sqlite:///{tmp_path / 'nested' / 'dir' / 'auth.db'}"


@pytest.fixture
def migrated(database_url: str) -> Iterator[tuple[sa.Engine, sessionmaker[DbSession]]]:
    """Migrate the database to head and return an engine and sessionmaker for it."""
    migrations.upgrade(database_url)
    engine = make_engine(database_url)
    try:
        yield engine, make_sessionmaker(engine)
    finally:
        engine.dispose()


def _table_names(database_url: str) -> set[str]:
    """Return the names of the tables that exist in the database."""
    engine = make_engine(database_url)
    try:
        return set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def _new_user(email: str) -> User:
    """Return an unsaved user with a placeholder hash."""
    return User(email=email, hashed_password="not-a-real-hash")


def _token_hash() -> str:
    """Return a random 64-character hex string shaped like a SHA-256 digest."""
    return uuid.uuid4().hex + uuid.uuid4().hex


def _add_user_graph(s: DbSession, email: str) -> User:
    """Add a user with a session, two rotated refresh tokens and a reset token."""
    now = utcnow()
    user = _new_user(email)
    s.add(user)
    s.flush()
    login = Session(user_id=user.id, user_agent="pytest", ip_address="2001:db8::1")
    s.add(login)
    s.flush()
    old = RefreshToken(
        token_hash=_token_hash(),
        session_id=login.id,
        user_id=user.id,
        expires_at=now + timedelta(days=7),
        used_at=now,
    )
    new = RefreshToken(
        token_hash=_token_hash(),
        session_id=login.id,
        user_id=user.id,
        expires_at=now + timedelta(days=7),
    )
    s.add_all([old, new])
    s.flush()
    old.replaced_by_id = new.id
    s.add(
        PasswordResetToken(
            token_hash=_token_hash(), user_id=user.id, expires_at=now + timedelta(minutes=30)
        )
    )
    s.flush()
    return user


def _count_rows(s: DbSession, model: type[Base], user_id: uuid.UUID) -> int:
    """Count the rows of `model` that belong to `user_id`."""
    column = model.__table__.c.user_id  # type: ignore[attr-defined]
    return s.scalar(sa.select(sa.func.count()).select_from(model).where(column == user_id)) or 0


def test_upgrade_matches_models_and_downgrade_removes_everything(database_url: str) -> None:
    """Upgrade creates exactly the models' tables; downgrade leaves only alembic_version."""
    expected = set(Base.metadata.tables) | {"alembic_version"}

    migrations.upgrade(database_url)
    assert migrations.pending_diff(database_url) == []
    assert _table_names(database_url) == expected

    migrations.downgrade(database_url)
    assert _table_names(database_url) == {"alembic_version"}

    migrations.upgrade(database_url)
    assert migrations.pending_diff(database_url) == []
    assert _table_names(database_url) == expected


def _columns(database_url: str, table: str) -> set[str]:
    """Return the column names of a table as the database has them."""
    engine = make_engine(database_url)
    try:
        return {column["name"] for column in sa.inspect(engine).get_columns(table)}
    finally:
        engine.dispose()


def test_login_throttle_revision_upgrades_and_downgrades(database_url: str) -> None:
    """0003 swaps the per-email counter for per-key counters that know their account, and back."""
    migrations.upgrade(database_url, "0001")
    assert "email_hash" in _columns(database_url, "login_throttles")
    migrations.upgrade(database_url, "0003_login_throttle_per_address")
    assert _columns(database_url, "login_throttles") == {
        "key_hash",
        "account_hash",
        "failures",
        "window_started_at",
        "locked_until",
    }
    migrations.downgrade(database_url, "0001")
    assert _columns(database_url, "login_throttles") == {
        "email_hash",
        "failures",
        "window_started_at",
        "locked_until",
    }


def test_email_verification_revision_counts_existing_users_as_verified(
    database_url: str,
) -> None:
    """0007: accounts from before verification keep signing in; later raw rows are unverified."""
    migrations.upgrade(database_url, "0006_oauth_clients")
    engine = make_engine(database_url)
    insert = (
        "INSERT INTO users (id, email, hashed_password, is_active, is_superuser, created_at,"
        " updated_at) VALUES (:id, :email, 'x', true, false, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
    )
    users = sa.table("users", sa.column("email"), sa.column("email_verified"))
    try:
        with engine.begin() as connection:
            connection.execute(sa.text(insert), {"id": uuid.uuid4().hex, "email": "old@x.test"})
        migrations.upgrade(database_url)
        with engine.begin() as connection:
            connection.execute(sa.text(insert), {"id": uuid.uuid4().hex, "email": "new@x.test"})
            found = connection.execute(sa.select(users.c.email, users.c.email_verified))
            verified = {email: flag for email, flag in found}
        assert verified == {"old@x.test": True, "new@x.test": False}
        migrations.downgrade(database_url, "0006_oauth_clients")
        assert "email_verified" not in _columns(database_url, "users")
        assert "email_verification_tokens" not in _table_names(database_url)
    finally:
        engine.dispose()


def test_pending_diff_reports_drift(database_url: str) -> None:
    """pending_diff is not trivially empty: a schema that differs from the models is reported."""
    migrations.upgrade(database_url)
    engine = make_engine(database_url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("DROP INDEX ix_sessions_user_id"))
    finally:
        engine.dispose()
    diff = migrations.pending_diff(database_url)
    assert any(op[0] == "add_index" and op[1].name == "ix_sessions_user_id" for op in diff)


def test_deleting_user_cascades_to_sessions_and_tokens(
    migrated: tuple[sa.Engine, sessionmaker[DbSession]],
) -> None:
    """Deleting a user deletes their sessions and tokens, and nobody else's."""
    _, sessions = migrated
    with sessions.begin() as s:
        victim_id = _add_user_graph(s, "victim@example.com").id
        bystander_id = _add_user_graph(s, "bystander@example.com").id

    with sessions.begin() as s:
        s.execute(sa.delete(User).where(User.id == victim_id))

    with sessions() as s:
        for model in (Session, RefreshToken, PasswordResetToken):
            assert _count_rows(s, model, victim_id) == 0, model.__tablename__
        assert _count_rows(s, Session, bystander_id) == 1
        assert _count_rows(s, RefreshToken, bystander_id) == 2
        assert _count_rows(s, PasswordResetToken, bystander_id) == 1


def test_deleting_session_cascades_to_its_tokens(
    migrated: tuple[sa.Engine, sessionmaker[DbSession]],
) -> None:
    """Deleting a session deletes its refresh tokens but keeps the user."""
    _, sessions = migrated
    with sessions.begin() as s:
        user_id = _add_user_graph(s, "one@example.com").id
    with sessions.begin() as s:
        s.execute(sa.delete(Session).where(Session.user_id == user_id))
    with sessions() as s:
        assert _count_rows(s, RefreshToken, user_id) == 0
        assert s.get(User, user_id) is not None


def test_deleting_replacement_token_nulls_the_link(
    migrated: tuple[sa.Engine, sessionmaker[DbSession]],
) -> None:
    """replaced_by_id is SET NULL, so removing a newer token keeps the older one."""
    _, sessions = migrated
    with sessions.begin() as s:
        user_id = _add_user_graph(s, "chain@example.com").id
    with sessions.begin() as s:
        old = s.scalars(sa.select(RefreshToken).where(RefreshToken.used_at.is_not(None))).one()
        old_id, new_id = old.id, old.replaced_by_id
        assert new_id is not None
        s.execute(sa.delete(RefreshToken).where(RefreshToken.id == new_id))
    with sessions() as s:
        kept = s.get(RefreshToken, old_id)
        assert kept is not None
        assert kept.replaced_by_id is None
        assert _count_rows(s, RefreshToken, user_id) == 1


def test_email_is_unique(migrated: tuple[sa.Engine, sessionmaker[DbSession]]) -> None:
    """A second user with the same (normalised) email is refused by the database."""
    _, sessions = migrated
    with sessions.begin() as s:
        s.add(_new_user("same@example.com"))
    with pytest.raises(IntegrityError), sessions.begin() as s:
        s.add(_new_user("same@example.com"))
    with sessions() as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(User)) == 1


def test_token_hash_is_unique(migrated: tuple[sa.Engine, sessionmaker[DbSession]]) -> None:
    """Two reset tokens with one hash are refused by the database."""
    _, sessions = migrated
    digest = _token_hash()
    with sessions.begin() as s:
        user = _new_user("hash@example.com")
        s.add(user)
        s.flush()
        user_id = user.id
    expires = utcnow() + timedelta(minutes=5)
    with sessions.begin() as s:
        s.add(PasswordResetToken(token_hash=digest, user_id=user_id, expires_at=expires))
    with pytest.raises(IntegrityError), sessions.begin() as s:
        s.add(PasswordResetToken(token_hash=digest, user_id=user_id, expires_at=expires))


def test_defaults_and_timestamps_round_trip_as_aware_utc(
    migrated: tuple[sa.Engine, sessionmaker[DbSession]],
) -> None:
    """Python-side defaults fill ids and flags; timestamps come back aware, in UTC, unchanged."""
    _, sessions = migrated
    plus_two = timezone(timedelta(hours=2))
    locked = datetime(2030, 1, 2, 3, 4, 5, 123456, tzinfo=plus_two)
    before = utcnow()
    with sessions.begin() as s:
        user = _new_user("defaults@example.com")
        s.add(user)
        s.add(
            LoginThrottle(
                key_hash=_token_hash(), account_hash=_token_hash(), failures=3, locked_until=locked
            )
        )
        s.flush()
        user_id = user.id
    after = utcnow()

    with sessions() as s:
        stored = s.get(User, user_id)
        assert stored is not None
        assert isinstance(stored.id, uuid.UUID)
        assert stored.is_active is True
        assert stored.is_superuser is False
        assert stored.role == "user"
        assert stored.created_at.utcoffset() == timedelta(0)
        assert before <= stored.created_at <= after
        throttle = s.scalars(sa.select(LoginThrottle)).one()
        assert throttle.locked_until == locked
        assert throttle.locked_until is not None
        assert throttle.locked_until.utcoffset() == timedelta(0)
        # Ordering works in SQL on both backends (SQLite compares the stored text).
        just_before = datetime(2030, 1, 2, 1, 4, 4, tzinfo=UTC)
        later = s.scalars(
            sa.select(LoginThrottle).where(LoginThrottle.locked_until > just_before)
        ).all()
        assert len(later) == 1


def test_naive_datetimes_are_refused(migrated: tuple[sa.Engine, sessionmaker[DbSession]]) -> None:
    """A naive timestamp is a bug (which zone?), so writing one fails instead of guessing."""
    _, sessions = migrated
    naive = datetime(2030, 1, 1)
    with pytest.raises(StatementError), sessions.begin() as s:
        s.add(
            LoginThrottle(
                key_hash=_token_hash(), account_hash=_token_hash(), failures=1, locked_until=naive
            )
        )


def test_sqlite_connections_enforce_foreign_keys_and_use_wal(tmp_path: Path) -> None:
    """Every SQLite connection gets the pragmas that cascades and concurrent workers need."""
    engine = make_engine(f"sqlite:///{tmp_path / 'a' / 'b.db'}")
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 5000
    finally:
        engine.dispose()
    assert (tmp_path / "a" / "b.db").exists()
