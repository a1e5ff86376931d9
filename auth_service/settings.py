"""Settings of the auth service, read once from the environment and frozen."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from auth_service.security.tokens import ALGORITHMS, MIN_HS256_SECRET_BYTES

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_VAR_DIR = REPO_ROOT / "var"
DEFAULT_SPEC_PATH = REPO_ROOT / "openapi" / "auth.yaml"
DEFAULT_DATABASE_URL = f"sqlite:///{DEFAULT_VAR_DIR / 'authgate.db'}"

RESPONSE_VALIDATION_MODES = ("strict", "log", "off")


class SettingsError(ValueError):
    """A setting is missing or invalid; the message names the variable."""


@dataclass(frozen=True)
class Settings:
    """Everything the auth service can be configured with (DESIGN §8)."""

    database_url: str = DEFAULT_DATABASE_URL
    database_pool_size: int = 5
    database_max_overflow: int = 10
    database_pool_timeout_seconds: int = 5
    redis_url: str | None = None
    port: int = 8001
    spec_path: Path = DEFAULT_SPEC_PATH
    var_dir: Path = DEFAULT_VAR_DIR
    jwt_algorithm: str = "RS256"
    jwt_private_key_file: str | None = None
    jwt_previous_public_key_files: tuple[str, ...] = ()
    jwt_secret: str | None = field(default=None, repr=False)
    jwt_issuer: str = "authgate"
    jwt_audience: str = "authgate-api"
    access_token_expire_minutes: int = 60
    refresh_token_expire_days: int = 7
    refresh_reuse_grace_seconds: int = 10
    response_validation: str = "strict"
    bcrypt_rounds: int = 12
    allow_registration: bool = True
    smtp_host: str | None = None
    smtp_port: int = 25
    smtp_from: str = "authgate@localhost"
    smtp_username: str | None = None
    smtp_password: str | None = field(default=None, repr=False)
    smtp_starttls: bool = False
    password_reset_url: str = "http://localhost:8000/reset-password"  # noqa: S105 - a URL
    password_reset_token_expire_minutes: int = 30
    login_max_failures: int = 5
    login_lockout_seconds: int = 900
    trusted_proxies: tuple[str, ...] = ()
    log_format: str = "json"
    prometheus_multiproc_dir: str | None = None
    otel_exporter_otlp_endpoint: str | None = None
    otel_service_name: str = "authgate-auth"

    @property
    def access_token_ttl_seconds(self) -> int:
        """Lifetime of an access token in seconds."""
        return self.access_token_expire_minutes * 60

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read and check every setting; raise SettingsError naming the bad variable."""
        env = os.environ if env is None else env
        read = _Reader(env)
        var_dir = Path(read.text("AUTHGATE_VAR_DIR", str(DEFAULT_VAR_DIR)))
        settings = cls(
            database_url=read.text("DATABASE_URL", f"sqlite:///{var_dir / 'authgate.db'}"),
            database_pool_size=read.integer("DATABASE_POOL_SIZE", 5, minimum=1, maximum=1000),
            database_max_overflow=read.integer(
                "DATABASE_MAX_OVERFLOW", 10, minimum=0, maximum=1000
            ),
            database_pool_timeout_seconds=read.integer(
                "DATABASE_POOL_TIMEOUT_SECONDS", 5, minimum=1, maximum=60
            ),
            redis_url=read.optional("REDIS_URL"),
            port=read.integer("AUTH_PORT", 8001, minimum=1, maximum=65535),
            spec_path=Path(read.text("OPENAPI_SPEC_PATH", str(DEFAULT_SPEC_PATH))),
            var_dir=var_dir,
            jwt_algorithm=read.choice("JWT_ALGORITHM", "RS256", ALGORITHMS),
            jwt_private_key_file=read.optional("JWT_PRIVATE_KEY_FILE"),
            jwt_previous_public_key_files=read.csv("JWT_PREVIOUS_PUBLIC_KEY_FILES"),
            jwt_secret=read.optional("JWT_SECRET"),
            jwt_issuer=read.text("JWT_ISSUER", "authgate"),
            jwt_audience=read.text("JWT_AUDIENCE", "authgate-api"),
            access_token_expire_minutes=read.integer(
                "ACCESS_TOKEN_EXPIRE_MINUTES", 60, minimum=1, maximum=24 * 60
            ),
            refresh_token_expire_days=read.integer(
                "REFRESH_TOKEN_EXPIRE_DAYS", 7, minimum=1, maximum=365
            ),
            refresh_reuse_grace_seconds=read.integer(
                "REFRESH_REUSE_GRACE_SECONDS", 10, minimum=0, maximum=300
            ),
            response_validation=read.choice(
                "RESPONSE_VALIDATION", "strict", RESPONSE_VALIDATION_MODES
            ),
            bcrypt_rounds=read.integer("BCRYPT_ROUNDS", 12, minimum=4, maximum=31),
            allow_registration=read.boolean("ALLOW_REGISTRATION", True),
            smtp_host=read.optional("SMTP_HOST"),
            smtp_port=read.integer("SMTP_PORT", 25, minimum=1, maximum=65535),
            smtp_from=read.text("SMTP_FROM", "authgate@localhost"),
            smtp_username=read.optional("SMTP_USERNAME"),
            smtp_password=read.optional("SMTP_PASSWORD"),
            smtp_starttls=read.boolean("SMTP_STARTTLS", False),
            password_reset_url=read.text(
                "PASSWORD_RESET_URL", "http://localhost:8000/reset-password"
            ),
            password_reset_token_expire_minutes=read.integer(
                "PASSWORD_RESET_TOKEN_EXPIRE_MINUTES", 30, minimum=1, maximum=24 * 60
            ),
            login_max_failures=read.integer("LOGIN_MAX_FAILURES", 5, minimum=1, maximum=1000),
            login_lockout_seconds=read.integer(
                "LOGIN_LOCKOUT_SECONDS", 900, minimum=1, maximum=86400
            ),
            trusted_proxies=read.csv("TRUSTED_PROXIES"),
            log_format=read.choice("LOG_FORMAT", "json", ("json", "console")),
            prometheus_multiproc_dir=read.optional("PROMETHEUS_MULTIPROC_DIR"),
            otel_exporter_otlp_endpoint=read.optional("OTEL_EXPORTER_OTLP_ENDPOINT"),
            otel_service_name=read.text("OTEL_SERVICE_NAME", "authgate-auth"),
        )
        settings.check()
        return settings

    def check(self) -> None:
        """Refuse combinations that cannot work, naming the variable to fix."""
        weak_secret = not self.jwt_secret or len(self.jwt_secret.encode()) < MIN_HS256_SECRET_BYTES
        if self.jwt_algorithm == "HS256" and weak_secret:
            raise SettingsError(
                f"JWT_SECRET must be set to at least {MIN_HS256_SECRET_BYTES} bytes for HS256"
            )
        if not self.database_url.startswith(("sqlite", "postgresql")):
            raise SettingsError("DATABASE_URL must be a sqlite:// or postgresql:// URL")
        if not self.password_reset_url.startswith(("http://", "https://")):
            raise SettingsError("PASSWORD_RESET_URL must be an http(s) URL")
        if self.otel_exporter_otlp_endpoint and not self.otel_exporter_otlp_endpoint.startswith(
            ("http://", "https://")
        ):
            raise SettingsError("OTEL_EXPORTER_OTLP_ENDPOINT must be an http(s) URL")
        for cidr in self.trusted_proxies:
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError:
                raise SettingsError(f"TRUSTED_PROXIES has an invalid CIDR: {cidr!r}") from None


class _Reader:
    """Typed access to environment variables with errors that name the variable."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self._env = env

    def optional(self, name: str) -> str | None:
        value = self._env.get(name, "").strip()
        return value or None

    def text(self, name: str, default: str) -> str:
        return self.optional(name) or default

    def integer(self, name: str, default: int, *, minimum: int, maximum: int) -> int:
        raw = self.optional(name)
        if raw is None:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise SettingsError(f"{name} must be an integer, got {raw!r}") from None
        if not minimum <= value <= maximum:
            raise SettingsError(f"{name} must be between {minimum} and {maximum}, got {value}")
        return value

    def boolean(self, name: str, default: bool) -> bool:
        raw = self.optional(name)
        if raw is None:
            return default
        lowered = raw.lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise SettingsError(f"{name} must be true or false, got {raw!r}")

    def choice(self, name: str, default: str, choices: tuple[str, ...]) -> str:
        value = self.text(name, default)
        if value not in choices:
            raise SettingsError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
        return value

    def csv(self, name: str) -> tuple[str, ...]:
        raw = self.optional(name) or ""
        return tuple(part.strip() for part in raw.split(",") if part.strip())
