"""Typed reads of environment variables, for both services and their gunicorn configs.

Every setting is read through one `EnvReader`, so an empty value means "unset", numbers,
flags and lists are parsed one way, and every error names the variable it came from.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping

TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
FALSE_WORDS = frozenset({"0", "false", "no", "off"})

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class EnvError(ValueError):
    """A variable is missing or invalid; the message starts with its name."""


class EnvReader:
    """Reads typed values from an environment mapping; blank values count as unset."""

    def __init__(self, environ: Mapping[str, str], error: type[EnvError] = EnvError) -> None:
        """Read from `environ`; raise `error` (an EnvError subclass) for bad values."""
        self._environ = environ
        self._error = error

    def fail(self, name: str, problem: str) -> EnvError:
        """The error to raise for variable `name`."""
        return self._error(f"{name}: {problem}")

    def optional(self, name: str) -> str | None:
        """The trimmed value, or None when unset or blank."""
        value = self._environ.get(name, "").strip()
        return value or None

    def text(self, name: str, default: str) -> str:
        """The trimmed value, or `default` when unset or blank."""
        return self.optional(name) or default

    def integer(self, name: str, default: int, *, minimum: int, maximum: int) -> int:
        """An integer within [minimum, maximum]."""
        raw = self.optional(name)
        if raw is None:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise self.fail(name, f"expected an integer, got {raw!r}") from None
        if not minimum <= value <= maximum:
            raise self.fail(name, f"must be between {minimum} and {maximum}, got {value}")
        return value

    def number(self, name: str, default: float, *, minimum: float) -> float:
        """A finite number of at least `minimum`."""
        raw = self.optional(name)
        if raw is None:
            return default
        try:
            value = float(raw)
        except ValueError:
            raise self.fail(name, f"expected a number, got {raw!r}") from None
        # NOTE: `not >=` also refuses NaN, which compares false with everything.
        if not value >= minimum or value == float("inf"):
            raise self.fail(name, f"must be a finite number of at least {minimum}, got {raw!r}")
        return value

    def boolean(self, name: str, default: bool) -> bool:
        """A boolean written as true/false, yes/no, on/off or 1/0."""
        raw = self.optional(name)
        if raw is None:
            return default
        lowered = raw.lower()
        if lowered in TRUE_WORDS:
            return True
        if lowered in FALSE_WORDS:
            return False
        raise self.fail(name, f"expected true or false, got {raw!r}")

    def choice(self, name: str, default: str, choices: tuple[str, ...]) -> str:
        """One of `choices` (compared as written)."""
        value = self.text(name, default)
        if value not in choices:
            raise self.fail(name, f"must be one of {', '.join(choices)}, got {value!r}")
        return value

    def csv(self, name: str, default: tuple[str, ...] = ()) -> tuple[str, ...]:
        """A comma-separated list, blanks dropped; `default` when unset."""
        raw = self.optional(name)
        if raw is None:
            return default
        return tuple(part.strip() for part in raw.split(",") if part.strip())

    def networks(self, name: str) -> tuple[Network, ...]:
        """Comma-separated IPs or CIDRs (host bits allowed: 10.0.0.1/8 is 10.0.0.0/8)."""
        try:
            return tuple(ipaddress.ip_network(item, strict=False) for item in self.csv(name))
        except ValueError:
            raise self.fail(name, "expected comma-separated IP addresses or CIDRs") from None
