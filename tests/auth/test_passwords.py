"""bcrypt hashing: round trip, the 72-byte limit, malformed input, the dummy hash."""

from typing import Any

import argon2
import bcrypt
import pytest

from auth_service.security.passwords import (
    MAX_PASSWORD_BYTES,
    PasswordHasher,
    PasswordTooLongError,
    is_supported_hash,
)

ROUNDS = 4  # the cheapest cost bcrypt allows: keeps the suite fast


@pytest.fixture(scope="module")
def hasher() -> PasswordHasher:
    """Return a hasher at the cheapest cost."""
    return PasswordHasher(rounds=ROUNDS)


def test_hash_then_verify_round_trip(hasher: PasswordHasher) -> None:
    """A hash verifies its password, uses the configured cost and is salted."""
    hashed = hasher.hash("correct horse battery staple")
    assert hasher.verify("correct horse battery staple", hashed) is True
    assert hashed.startswith(f"$2b${ROUNDS:02d}$")
    assert hasher.hash("correct horse battery staple") != hashed


def test_wrong_password_does_not_verify(hasher: PasswordHasher) -> None:
    """A different password, even by one character or case, is rejected."""
    hashed = hasher.hash("correct horse battery staple")
    assert hasher.verify("correct horse battery stapl", hashed) is False
    assert hasher.verify("Correct horse battery staple", hashed) is False
    assert hasher.verify("", hashed) is False


@pytest.mark.parametrize("char", ["a", "é", "€", "😀"])
def test_limit_is_72_bytes_not_72_characters(hasher: PasswordHasher, char: str) -> None:
    """Exactly 72 bytes of UTF-8 hash fine; one more byte raises, whatever the character width."""
    width = len(char.encode("utf-8"))
    at_limit = char * (MAX_PASSWORD_BYTES // width)
    assert len(at_limit.encode("utf-8")) == MAX_PASSWORD_BYTES
    assert hasher.verify(at_limit, hasher.hash(at_limit)) is True

    with pytest.raises(PasswordTooLongError) as info:
        hasher.hash(at_limit + "a")
    assert isinstance(info.value, ValueError)
    assert at_limit not in str(info.value)


def test_e_acute_36_times_is_the_limit(hasher: PasswordHasher) -> None:
    """'é' is two bytes: 36 of them fit, one more ASCII byte does not."""
    assert MAX_PASSWORD_BYTES == 72
    hasher.hash("é" * 36)
    with pytest.raises(PasswordTooLongError):
        hasher.hash("é" * 36 + "a")


def test_overlong_password_never_verifies_even_against_its_prefix(
    hasher: PasswordHasher,
) -> None:
    """No silent truncation: the 72-byte prefix's hash does not accept the longer password."""
    prefix = "p" * MAX_PASSWORD_BYTES
    hashed = hasher.hash(prefix)
    assert hasher.verify(prefix + "extra", hashed) is False
    assert hasher.verify("x" * 10_000, hashed) is False


@pytest.mark.parametrize(
    "hashed",
    ["", "garbage", "$2b$04$short", "$2b$99$" + "a" * 53, "é" * 60, "\x00"],
)
def test_malformed_hash_is_false_not_an_exception(hasher: PasswordHasher, hashed: str) -> None:
    """A corrupt stored hash fails verification instead of raising."""
    assert hasher.verify("any password", hashed) is False


def test_lone_surrogates_hash_and_verify(hasher: PasswordHasher) -> None:
    """JSON can carry lone surrogates; they must not raise UnicodeEncodeError."""
    password = "abc\ud800def"
    hashed = hasher.hash(password)
    assert hasher.verify(password, hashed) is True
    assert hasher.verify("abc\ud801def", hashed) is False


@pytest.mark.parametrize("password", ["", "short", "x" * 10_000, "é" * 5_000, "\ud800" * 40])
def test_dummy_verify_returns_none_for_any_input(hasher: PasswordHasher, password: str) -> None:
    """dummy_verify never raises, including far beyond bcrypt's limit."""
    assert hasher.dummy_verify(password) is None


def test_dummy_verify_does_real_bcrypt_work_at_the_configured_cost(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """dummy_verify runs one real bcrypt check against a hash of the configured cost."""
    hasher = PasswordHasher(rounds=5)
    calls: list[tuple[bytes, bytes]] = []
    real_checkpw = bcrypt.checkpw

    def spy(password: bytes, hashed: bytes) -> Any:
        calls.append((password, hashed))
        return real_checkpw(password, hashed)  # still the real work

    monkeypatch.setattr(bcrypt, "checkpw", spy)
    hasher.dummy_verify("x" * 500)
    assert len(calls) == 1
    password, hashed = calls[0]
    assert len(password) <= MAX_PASSWORD_BYTES
    assert hashed.startswith(b"$2b$05$")

    # An over-long password pays the same single bcrypt check before answering False.
    calls.clear()
    assert hasher.verify("y" * 500, hasher.hash("whatever")) is False
    assert len(calls) == 1
    assert calls[0][1].startswith(b"$2b$05$")


def test_needs_rehash_detects_a_cost_change(hasher: PasswordHasher) -> None:
    """A hash made at another cost needs rehashing; one at the configured cost does not."""
    assert hasher.needs_rehash(hasher.hash("pw")) is False
    assert hasher.needs_rehash(PasswordHasher(rounds=5).hash("pw")) is True
    assert hasher.needs_rehash("garbage") is True


# --- hashes imported from the monolith ----------------------------------------------------

# What full-stack-fastapi-template stores: pwdlib's Argon2Hasher is argon2-cffi's defaults.
MONOLITH_ARGON2 = argon2.PasswordHasher()


def bcrypt_2a(password: str, rounds: int = ROUNDS) -> str:
    """A bcrypt hash with the older `$2a$` prefix (passlib, other bcrypt libraries)."""
    salt = bcrypt.gensalt(rounds=rounds, prefix=b"2a")
    return bcrypt.hashpw(password.encode(), salt).decode()


def test_imported_argon2id_verifies_and_needs_rehash(hasher: PasswordHasher) -> None:
    hashed = MONOLITH_ARGON2.hash("correct horse battery staple")
    assert hashed.startswith("$argon2id$")
    assert hasher.verify("correct horse battery staple", hashed) is True
    assert hasher.verify("correct horse battery stapl", hashed) is False
    assert hasher.verify("", hashed) is False
    assert hasher.needs_rehash(hashed) is True


def test_imported_argon2id_of_a_long_password_verifies(hasher: PasswordHasher) -> None:
    """argon2 reads every byte: a monolith user with a 100-byte password can still sign in."""
    long_password = "p" * 100
    hashed = MONOLITH_ARGON2.hash(long_password)
    assert hasher.verify(long_password, hashed) is True
    assert hasher.verify("p" * MAX_PASSWORD_BYTES, hashed) is False


@pytest.mark.parametrize("kind", [argon2.Type.I, argon2.Type.D])
def test_other_argon2_variants_are_not_accepted(hasher: PasswordHasher, kind: argon2.Type) -> None:
    hashed = argon2.PasswordHasher(type=kind).hash("pw")
    assert hasher.verify("pw", hashed) is False
    assert is_supported_hash(hashed) is False


def test_imported_2a_verifies_and_is_replaced_even_at_our_cost(hasher: PasswordHasher) -> None:
    hashed = bcrypt_2a("correct horse battery staple")
    assert hashed.startswith(f"$2a${ROUNDS:02d}$")
    assert hasher.verify("correct horse battery staple", hashed) is True
    assert hasher.verify("Correct horse battery staple", hashed) is False
    assert hasher.needs_rehash(hashed) is True


@pytest.mark.parametrize(
    "hashed",
    [
        "$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHQ$" + "A" * 43,  # mangled digest
        "$argon2id$v=19$m=65536,t=3,p=4$",
        "$argon2id$garbage",
    ],
)
def test_corrupt_argon2id_is_false_not_an_exception(hasher: PasswordHasher, hashed: str) -> None:
    assert hasher.verify("any password", hashed) is False


def test_supported_hash_formats() -> None:
    assert is_supported_hash(bcrypt_2a("pw")) is True
    assert is_supported_hash(PasswordHasher(rounds=4).hash("pw")) is True
    assert is_supported_hash(MONOLITH_ARGON2.hash("pw")) is True
    for unsupported in (
        "",
        "plaintext-password",
        "$2y$04$" + "a" * 53,  # PHP's prefix
        "$2b$03$" + "a" * 53,  # below bcrypt's minimum cost
        "$2b$04$" + "a" * 52,
        "$pbkdf2-sha256$29000$abc$def",
        "$argon2id$v=19$m=65536,t=3,p=4$",
        # A hash that would make each of that user's sign-ins cost 4 GiB of memory.
        "$argon2id$v=19$m=4194304,t=1,p=4$c2FsdHNhbHRzYWx0$" + "A" * 43,
        "$argon2id$v=19$m=65536,t=100,p=4$c2FsdHNhbHRzYWx0$" + "A" * 43,
    ):
        assert is_supported_hash(unsupported) is False, unsupported


@pytest.mark.parametrize("rounds", [3, 32])
def test_rounds_out_of_range_are_refused(rounds: int) -> None:
    """bcrypt's cost range is 4..31; anything else is a configuration error."""
    with pytest.raises(ValueError, match="rounds"):
        PasswordHasher(rounds=rounds)
