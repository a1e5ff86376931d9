"""Settings of the auth service, read once from the environment and frozen."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from auth_service.security.secrets_box import is_fernet_key
from auth_service.security.tokens import ALGORITHMS, MIN_HS256_SECRET_BYTES
from authgate_common.env import EnvError, EnvReader, Network
from authgate_common.secrets_file import MIN_INTERNAL_TOKEN_LENGTH

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_VAR_DIR = REPO_ROOT / "var"
DEFAULT_SPEC_PATH = REPO_ROOT / "openapi" / "auth.yaml"
DEFAULT_DATABASE_URL = f"sqlite:///{DEFAULT_VAR_DIR / 'authgate.db'}"

RESPONSE_VALIDATION_MODES = ("strict", "log", "off")


class SettingsError(EnvError):
    """A setting is missing or invalid; the message names the variable."""


@dataclass(frozen=True)
class Settings:
    """Everything the auth service can be configured with (all in .env.example)."""

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
    mail_retry_base_seconds: int = 10
    mail_retry_max_seconds: int = 3600
    mail_max_attempts: int = 12
    mail_poll_seconds: int = 5
    mail_sender_in_process: bool = True
    login_max_failures: int = 5
    login_lockout_seconds: int = 900
    login_max_failures_per_account: int = 100
    login_account_window_seconds: int = 3600
    trusted_proxies: tuple[Network, ...] = ()
    log_format: str = "json"
    prometheus_multiproc_dir: str | None = None
    otel_exporter_otlp_endpoint: str | None = None
    otel_service_name: str = "authgate-auth"
    internal_api_token: str | None = field(default=None, repr=False)
    # A Fernet key (urlsafe base64 of 32 bytes); None: generated once under var/keys/.
    mfa_encryption_key: str | None = field(default=None, repr=False)
    mfa_issuer: str = "Authgate"
    # The gateway's public base URL: the OAuth endpoints the discovery documents publish.
    public_url: str = "http://127.0.0.1:8000"
    # API scopes OAuth clients may be granted, beside openid, profile, email, offline_access.
    oauth_api_scopes: tuple[str, ...] = ()

    @property
    def access_token_ttl_seconds(self) -> int:
        """Lifetime of an access token in seconds."""
        return self.access_token_expire_minutes * 60

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read and check every setting; raise SettingsError naming the bad variable."""
        env = os.environ if env is None else env
        read = EnvReader(env, SettingsError)
        d = cls()  # the defaults are the fields' own, written once
        var_dir = Path(read.text("AUTHGATE_VAR_DIR", str(DEFAULT_VAR_DIR)))
        settings = cls(
            database_url=read.text("DATABASE_URL", f"sqlite:///{var_dir / 'authgate.db'}"),
            database_pool_size=read.integer(
                "DATABASE_POOL_SIZE", d.database_pool_size, minimum=1, maximum=1000
            ),
            database_max_overflow=read.integer(
                "DATABASE_MAX_OVERFLOW", d.database_max_overflow, minimum=0, maximum=1000
            ),
            database_pool_timeout_seconds=read.integer(
                "DATABASE_POOL_TIMEOUT_SECONDS",
                d.database_pool_timeout_seconds,
                minimum=1,
                maximum=60,
            ),
            redis_url=read.optional("REDIS_URL"),
            port=read.integer("AUTH_PORT", d.port, minimum=1, maximum=65535),
            spec_path=Path(read.text("OPENAPI_SPEC_PATH", str(DEFAULT_SPEC_PATH))),
            var_dir=var_dir,
            jwt_algorithm=read.choice("JWT_ALGORITHM", d.jwt_algorithm, ALGORITHMS),
            jwt_private_key_file=read.optional("JWT_PRIVATE_KEY_FILE"),
            jwt_previous_public_key_files=read.csv("JWT_PREVIOUS_PUBLIC_KEY_FILES"),
            jwt_secret=read.optional("JWT_SECRET"),
            jwt_issuer=read.text("JWT_ISSUER", d.jwt_issuer),
            jwt_audience=read.text("JWT_AUDIENCE", d.jwt_audience),
            access_token_expire_minutes=read.integer(
                "ACCESS_TOKEN_EXPIRE_MINUTES",
                d.access_token_expire_minutes,
                minimum=1,
                maximum=24 * 60,
            ),
            refresh_token_expire_days=read.integer(
                "REFRESH_TOKEN_EXPIRE_DAYS", d.refresh_token_expire_days, minimum=1, maximum=365
            ),
            refresh_reuse_grace_seconds=read.integer(
                "REFRESH_REUSE_GRACE_SECONDS", d.refresh_reuse_grace_seconds, minimum=0, maximum=300
            ),
            response_validation=read.choice(
                "RESPONSE_VALIDATION", d.response_validation, RESPONSE_VALIDATION_MODES
            ),
            bcrypt_rounds=read.integer("BCRYPT_ROUNDS", d.bcrypt_rounds, minimum=4, maximum=31),
            allow_registration=read.boolean("ALLOW_REGISTRATION", d.allow_registration),
            smtp_host=read.optional("SMTP_HOST"),
            smtp_port=read.integer("SMTP_PORT", d.smtp_port, minimum=1, maximum=65535),
            smtp_from=read.text("SMTP_FROM", d.smtp_from),
            smtp_username=read.optional("SMTP_USERNAME"),
            smtp_password=read.optional("SMTP_PASSWORD"),
            smtp_starttls=read.boolean("SMTP_STARTTLS", d.smtp_starttls),
            password_reset_url=read.text("PASSWORD_RESET_URL", d.password_reset_url),
            password_reset_token_expire_minutes=read.integer(
                "PASSWORD_RESET_TOKEN_EXPIRE_MINUTES",
                d.password_reset_token_expire_minutes,
                minimum=1,
                maximum=24 * 60,
            ),
            login_max_failures=read.integer(
                "LOGIN_MAX_FAILURES", d.login_max_failures, minimum=1, maximum=1000
            ),
            mail_retry_base_seconds=read.integer(
                "MAIL_RETRY_BASE_SECONDS", d.mail_retry_base_seconds, minimum=1, maximum=3600
            ),
            mail_retry_max_seconds=read.integer(
                "MAIL_RETRY_MAX_SECONDS", d.mail_retry_max_seconds, minimum=1, maximum=86400
            ),
            mail_max_attempts=read.integer(
                "MAIL_MAX_ATTEMPTS", d.mail_max_attempts, minimum=1, maximum=100
            ),
            mail_poll_seconds=read.integer(
                "MAIL_POLL_SECONDS", d.mail_poll_seconds, minimum=1, maximum=3600
            ),
            mail_sender_in_process=read.boolean("MAIL_SENDER_IN_PROCESS", d.mail_sender_in_process),
            login_lockout_seconds=read.integer(
                "LOGIN_LOCKOUT_SECONDS", d.login_lockout_seconds, minimum=1, maximum=86400
            ),
            login_max_failures_per_account=read.integer(
                "LOGIN_MAX_FAILURES_PER_ACCOUNT",
                d.login_max_failures_per_account,
                minimum=1,
                maximum=1_000_000,
            ),
            login_account_window_seconds=read.integer(
                "LOGIN_ACCOUNT_WINDOW_SECONDS",
                d.login_account_window_seconds,
                minimum=1,
                maximum=7 * 86400,
            ),
            trusted_proxies=read.networks("TRUSTED_PROXIES"),
            log_format=read.choice("LOG_FORMAT", d.log_format, ("json", "console")),
            prometheus_multiproc_dir=read.optional("PROMETHEUS_MULTIPROC_DIR"),
            otel_exporter_otlp_endpoint=read.optional("OTEL_EXPORTER_OTLP_ENDPOINT"),
            otel_service_name=read.text("OTEL_SERVICE_NAME", d.otel_service_name),
            internal_api_token=read.optional("INTERNAL_API_TOKEN"),
            mfa_encryption_key=read.optional("MFA_ENCRYPTION_KEY"),
            mfa_issuer=read.text("MFA_ISSUER", d.mfa_issuer),
            public_url=read.text("PUBLIC_URL", d.public_url).rstrip("/"),
            # NOTE: space- or comma-separated, as scopes are written in OAuth requests.
            oauth_api_scopes=tuple(
                part for part in read.text("OAUTH_API_SCOPES", "").replace(",", " ").split()
            ),
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
        if not self.public_url.startswith(("http://", "https://")):
            raise SettingsError("PUBLIC_URL must be an http(s) URL")
        if self.otel_exporter_otlp_endpoint and not self.otel_exporter_otlp_endpoint.startswith(
            ("http://", "https://")
        ):
            raise SettingsError("OTEL_EXPORTER_OTLP_ENDPOINT must be an http(s) URL")
        token = self.internal_api_token
        if token is not None and len(token) < MIN_INTERNAL_TOKEN_LENGTH:
            raise SettingsError(
                f"INTERNAL_API_TOKEN must be at least {MIN_INTERNAL_TOKEN_LENGTH} characters"
            )
        if self.mfa_encryption_key is not None and not is_fernet_key(self.mfa_encryption_key):
            raise SettingsError(
                "MFA_ENCRYPTION_KEY must be a Fernet key (urlsafe base64 of 32 bytes)"
            )
