"""bcrypt password hashing with an explicit 72-byte limit and a dummy hash for unknown users."""

import secrets

import bcrypt

# bcrypt only reads 72 bytes; bcrypt 5 raises ValueError beyond that. We refuse longer
# passwords explicitly instead of truncating or pre-hashing them (docs/architecture.md,
# "Decisions and why").
MAX_PASSWORD_BYTES = 72


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
        """Return whether `password` matches `hashed`; False for any malformed input."""
        encoded = _encode(password)
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
        """Return whether `hashed` was made with a different cost than the configured one."""
        try:
            return int(hashed.split("$")[2]) != self.rounds
        except (IndexError, ValueError):
            return True
