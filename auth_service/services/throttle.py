"""Login throttling that an attacker cannot turn against the account's owner.

Every failed login (or wrong current password) counts twice, for known and unknown
emails alike:

- per (email, client address): `per_address.max_failures` failures lock that pair only,
  so someone who knows an email cannot keep its owner, elsewhere, out;
- per email across all addresses (the ceiling): `per_account.max_failures` failures stop
  guessing spread over many addresses. This one does lock the owner out too, until its
  window passes, a completed password reset, or an admin unlock (`clear_account`).

The database keeps hashes only: neither an email of a non-user nor a client address is
stored in clear.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.orm import Session as DbSession
from sqlalchemy.orm import sessionmaker

from auth_service.db.models import LoginThrottle, utcnow
from auth_service.db.upsert import insert_or_lock
from auth_service.errors import LoginThrottled
from auth_service.security.opaque import token_hash


@dataclass(frozen=True)
class Limit:
    """At most `max_failures` within `seconds`; reaching it locks for `seconds` from then."""

    max_failures: int
    seconds: int

    @property
    def window(self) -> timedelta:
        """The counting window, which is also how long a lock lasts."""
        return timedelta(seconds=self.seconds)


def account_key(email: str) -> str:
    """The hash every row of an email carries (`account_hash`), to clear them together."""
    return token_hash(email)


def address_key(email: str, address: str | None) -> str:
    """The key of the strict counter of one email from one client address."""
    # NOTE: the prefixes keep the two kinds of key apart; an address never contains NUL.
    return token_hash(f"address\0{client_network(address)}\0{email}")


def client_network(address: str | None) -> str:
    """What one client controls: its IPv4 address, or the /64 around its IPv6 address.

    SECURITY: one IPv6 host usually holds a whole /64 (2^64 addresses); counting each
    address apart would give it unlimited fresh counters. An IPv4-mapped IPv6 address
    (a dual-stack socket) is the IPv4 client it maps.
    """
    try:
        ip = ipaddress.ip_address(address or "")
    except ValueError:
        return address or ""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network(f"{ip}/64", strict=False))
    return str(ip)


def ceiling_key(email: str) -> str:
    """The key of the email's counter across all addresses."""
    return token_hash(f"account\0{email}")


def clear_account(db: DbSession, email: str) -> None:
    """Forget every counter of an email (all addresses and the ceiling), in the caller's
    transaction: a completed password reset or an admin unlock."""
    # NOTE: the ceiling row is locked first, as record_failure locks it: one lock order,
    # so a reset during a stream of failures cannot deadlock on PostgreSQL. It is upserted,
    # not selected FOR UPDATE: when it is absent a select locks nothing, and a failure
    # inserting it meanwhile would then hold it while this DELETE holds an address row.
    account = account_key(email)
    row = {"key_hash": ceiling_key(email), "account_hash": account, "failures": 0}
    db.execute(
        insert_or_lock(db, LoginThrottle, {**row, "window_started_at": utcnow()}, "key_hash")
    )
    db.execute(delete(LoginThrottle).where(LoginThrottle.account_hash == account))


class LoginThrottler:
    """Counts failures per (email, address) and per email; refuses while either is locked."""

    def __init__(
        self, sessions: sessionmaker[DbSession], *, per_address: Limit, per_account: Limit
    ) -> None:
        self._sessions = sessions
        self._per_address = per_address
        self._per_account = per_account

    def check(
        self,
        email: str,
        address: str | None,
        *,
        audit: Callable[[DbSession], None] | None = None,
    ) -> None:
        """Raise LoginThrottled while this email is locked from this address or everywhere;
        `audit` first writes its event (the refusal) in a transaction of its own.

        PERF: that is one insert per refused attempt; the gateway's rate limit bounds them.
        """
        with self._sessions() as db:
            locks = db.scalars(
                select(LoginThrottle.locked_until).where(
                    LoginThrottle.key_hash.in_((address_key(email, address), ceiling_key(email)))
                )
            ).all()
        now = utcnow()
        until = max((lock for lock in locks if lock is not None and lock > now), default=None)
        if until is not None:
            if audit is not None:
                with self._sessions.begin() as db:
                    audit(db)
            raise LoginThrottled(retry_after=math.ceil((until - now).total_seconds()))

    def record_failure(
        self,
        email: str,
        address: str | None,
        *,
        audit: Callable[[DbSession], None] | None = None,
    ) -> None:
        """Count one failure on both counters, in one transaction; `audit` writes its
        event in that transaction (the failing request's own one rolls back)."""
        now = utcnow()
        account = account_key(email)
        with self._sessions.begin() as db:
            if audit is not None:
                audit(db)
            # NOTE: always the ceiling row first, then the address's: one lock order for
            # every transaction (clear_account too), so PostgreSQL cannot deadlock.
            self._count(db, ceiling_key(email), account, self._per_account, now)
            self._count(db, address_key(email, address), account, self._per_address, now)

    def forget_address(self, db: DbSession, email: str, address: str | None) -> None:
        """After a success from this address, in the caller's transaction.

        SECURITY: only this address's counter: the ceiling keeps counting what every
        other address tried, or one good login would reset a distributed attack's budget.
        """
        db.execute(
            delete(LoginThrottle).where(LoginThrottle.key_hash == address_key(email, address))
        )

    @staticmethod
    def _count(db: DbSession, key: str, account: str, limit: Limit, now: datetime) -> None:
        """Add one failure to a counter, starting a new window when the old one has passed."""
        # NOTE: the upsert takes the write lock (SQLite) or the row (PostgreSQL) at once,
        # so concurrent failures are counted, not lost, and a concurrent clear waits.
        db.execute(
            insert_or_lock(
                db,
                LoginThrottle,
                {"key_hash": key, "account_hash": account, "failures": 0, "window_started_at": now},
                "key_hash",
            )
        )
        row = db.scalars(select(LoginThrottle).where(LoginThrottle.key_hash == key)).one()
        if now - row.window_started_at > limit.window:
            row.failures = 0
            row.window_started_at = now
            row.locked_until = None
        row.failures += 1
        if row.failures >= limit.max_failures:
            row.locked_until = now + limit.window
