"""bcrypt hashing: round trip, the 72-byte limit, malformed input, the dummy hash."""

from typing import Any

import bcrypt
import pytest

from auth_service.security.passwords import MAX_PASSWORD_BYTES, PasswordHasher, PasswordTooLongError

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


@pytest.mark.parametrize("rounds", [3, 32])
def test_rounds_out_of_range_are_refused(rounds: int) -> None:
    """bcrypt's cost range is 4..31; anything else is a configuration error."""
    with pytest.raises(ValueError, match="rounds"):
        PasswordHasher(rounds=rounds)
