"""bcrypt password hashing with an explicit 72-byte limit and a dummy hash for unknown users.

Hashes imported from the monolith this service was extracted from (bcrypt `$2a$`/`$2b$`
at any cost, argon2id as pwdlib/argon2-cffi store it) verify too; `needs_rehash` says
which to replace with our own bcrypt on the next successful login.
"""

import re
import secrets

import argon2
import bcrypt
from argon2.exceptions import InvalidHashError, VerificationError

# bcrypt only reads 72 bytes; bcrypt 5 raises ValueError beyond that. We refuse longer
# passwords explicitly instead of truncating or pre-hashing them (docs/architecture.md,
# "Decisions and why").
MAX_PASSWORD_BYTES = 72
# What bcrypt.gensalt makes: the only hash that never needs replacing (at our cost).
OWN_BCRYPT_PREFIX = "$2b$"
_BCRYPT_HASH = re.compile(r"^\$2[ab]\$(0[4-9]|[12][0-9]|3[01])\$[./A-Za-z0-9]{53}$")
ARGON2ID_PREFIX = "$argon2id$"
MAX_ARGON2_MEMORY_KIB = 1024 * 1024  # 1 GiB; pwdlib's default is 64 MiB
MAX_ARGON2_TIME_COST = 16  # pwdlib's default is 3


def _encode(password: str) -> bytes:
    """Return the UTF-8 bytes bcrypt sees; lone surrogates (valid in JSON) never raise."""
    return password.encode("utf-8", errors="surrogatepass")


class PasswordTooLongError(ValueError):
    """The password is longer than bcrypt's 72-byte input limit."""

    def __init__(self) -> None:
        """Build the error without the password in its message."""
        super().__init__(f"password longer than {MAX_PASSWORD_BYTES} bytes of UTF-8")


class PasswordHasher:
    """Hash and verify passwords with bcrypt at a fixed cost."""

    def __init__(self, rounds: int) -> None:
        """Configure the bcrypt cost and precompute a dummy hash at that cost."""
        if not 4 <= rounds <= 31:
            raise ValueError("bcrypt rounds must be between 4 and 31")
        self.rounds = rounds
        # SECURITY: verifying against this hash for unknown emails costs the same bcrypt
        # work as a wrong password, so response times do not reveal which emails exist.
        self._dummy_hash = self.hash(secrets.token_urlsafe(32))

    def hash(self, password: str) -> str:
        """Return the bcrypt hash of `password`; raise PasswordTooLongError above 72 bytes."""
        encoded = _encode(password)
        if len(encoded) > MAX_PASSWORD_BYTES:
            raise PasswordTooLongError()
        return bcrypt.hashpw(encoded, bcrypt.gensalt(rounds=self.rounds)).decode("ascii")

    def verify(self, password: str, hashed: str) -> bool:
        """Return whether `password` matches `hashed` (bcrypt or imported argon2id);
        False for any malformed input."""
        encoded = _encode(password)
        if hashed.startswith(ARGON2ID_PREFIX):
            return _verify_argon2id(encoded, hashed)
        if len(encoded) > MAX_PASSWORD_BYTES:
            # Still pay the bcrypt cost so an over-long guess is not a faster answer.
            self.dummy_verify(password)
            return False
        try:
            return bcrypt.checkpw(encoded, hashed.encode("ascii"))
        except (ValueError, TypeError):  # malformed hash (bcrypt: "Invalid salt"), non-ASCII
            return False

    def dummy_verify(self, password: str) -> None:
        """Spend one verification's bcrypt work on a dummy hash (for unknown users)."""
        # Truncated to bcrypt's limit so any input costs the same and never raises.
        encoded = _encode(password)[:MAX_PASSWORD_BYTES]
        bcrypt.checkpw(encoded, self._dummy_hash.encode("ascii"))

    def needs_rehash(self, hashed: str) -> bool:
        """Return whether `hashed` is anything but our own bcrypt at the configured cost:
        another cost, an imported `$2a$` or argon2id hash."""
        if not (hashed.startswith(OWN_BCRYPT_PREFIX) and _BCRYPT_HASH.match(hashed)):
            return True
        return int(hashed.split("$")[2]) != self.rounds


def is_supported_hash(hashed: str) -> bool:
    """Whether `hashed` is a hash this service can verify: well-formed bcrypt `$2a$`/`$2b$`
    (cost 4..31) or argon2id with parameters argon2-cffi can read."""
    if _BCRYPT_HASH.match(hashed):
        return True
    if not hashed.startswith(ARGON2ID_PREFIX):
        return False
    try:
        params = argon2.extract_parameters(hashed)
    except (InvalidHashError, ValueError):
        return False
    # SECURITY: the hash sets what each login costs; refuse one that would let a row
    # of the import file make every sign-in of that user take gigabytes or seconds.
    return (
        params.type is argon2.Type.ID
        and params.memory_cost <= MAX_ARGON2_MEMORY_KIB
        and params.time_cost <= MAX_ARGON2_TIME_COST
    )


def _verify_argon2id(encoded: bytes, hashed: str) -> bool:
    # NOTE: no 72-byte limit here: argon2 reads the whole password, and a user imported
    # with a longer one must still be able to sign in (the hash then stays argon2id).
    if not is_supported_hash(hashed):
        return False  # SECURITY: never run a stored hash's unbounded cost parameters
    try:
        return bool(_ARGON2.verify(hashed, encoded))
    except (VerificationError, InvalidHashError):  # mismatch, or a corrupt stored hash
        return False


# Verification reads every parameter from the hash itself; these defaults are unused.
_ARGON2 = argon2.PasswordHasher()
