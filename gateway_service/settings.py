"""Gateway configuration: read once from the environment, typed, frozen, fail-fast."""

from __future__ import annotations

import json
import os
import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from authgate_common.claims import SCOPE_TOKEN
from authgate_common.env import EnvError, EnvReader, Network
from authgate_common.secrets_file import INTERNAL_PATH_PREFIX, MIN_INTERNAL_TOKEN_LENGTH

DEFAULT_SPEC_PATH = Path(__file__).resolve().parent.parent / "openapi" / "auth.yaml"
DEFAULT_VAR_DIR = Path(__file__).resolve().parent.parent / "var"
SUPPORTED_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "HS256"})
AUTH_MODES = frozenset({"required", "optional", "none", "spec"})
_PERIODS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}
DEFAULT_SERVICE_NAME = "authgate-gateway"
LOG_FORMATS = frozenset({"json", "console"})
_RATE_RE = re.compile(r"^\s*(\d+)\s*/\s*(\d*)\s*(second|minute|hour|day)s?\s*$")


class SettingsError(EnvError):
    """A configuration value is missing or invalid; the message names the variable."""


@dataclass(frozen=True, slots=True)
class Rate:
    """A rate limit: `limit` requests per `period` seconds."""

    limit: int
    period: int

    @classmethod
    def parse(cls, text: str, name: str) -> Rate:
        """Parse '600/minute', '20/10second' or '5/hour'."""
        match = _RATE_RE.match(text)
        if not match:
            raise SettingsError(
                f"{name}: expected '<count>/<second|minute|hour|day>', got {text!r}"
            )
        count = int(match.group(1))
        multiplier = int(match.group(2) or 1)
        if count < 1 or multiplier < 1:
            raise SettingsError(f"{name}: the count and the period must be positive")
        return cls(limit=count, period=multiplier * _PERIODS[match.group(3)])


@dataclass(frozen=True, slots=True)
class RouteConfig:
    """One entry of the route table: path prefix to upstream, with its policies."""

    prefix: str
    upstream: str
    auth: str = "required"
    rate_limit: str = "default"
    # OAuth scopes a token must all have (RFC 6749 §3.3 scope tokens); () asks for none.
    scopes: tuple[str, ...] = ()

    @classmethod
    def from_mapping(cls, item: Mapping[str, object], name: str) -> RouteConfig:
        """Build and check a route from its JSON object."""
        prefix = item.get("prefix")
        upstream = item.get("upstream")
        if not isinstance(prefix, str) or not prefix.startswith("/"):
            raise SettingsError(f"{name}: every route needs a 'prefix' starting with '/'")
        if not isinstance(upstream, str):
            raise SettingsError(f"{name}: route {prefix!r} needs an 'upstream' URL")
        auth = str(item.get("auth", "required"))
        if auth not in AUTH_MODES:
            raise SettingsError(
                f"{name}: route {prefix!r}: auth must be one of {sorted(AUTH_MODES)}"
            )
        rate_limit = str(item.get("rate_limit", "default"))
        if rate_limit not in ("default", "auth", "none"):
            Rate.parse(rate_limit, f"{name} ({prefix!r} rate_limit)")
        unknown = set(item) - {"prefix", "upstream", "auth", "rate_limit", "scopes"}
        if unknown:
            raise SettingsError(f"{name}: route {prefix!r} has unknown keys {sorted(unknown)}")
        scopes = _route_scopes(item.get("scopes", []), f"{name}: route {prefix!r}")
        if scopes and auth in ("none", "optional"):
            # SECURITY: a scope a request can skip by sending no token protects nothing.
            raise SettingsError(
                f"{name}: route {prefix!r}: scopes need auth 'required' or 'spec', not {auth!r}"
            )
        return cls(
            prefix=prefix.rstrip("/") or "/",
            upstream=_check_url(upstream, name),
            auth=auth,
            rate_limit=rate_limit,
            scopes=scopes,
        )


def _route_scopes(value: object, where: str) -> tuple[str, ...]:
    """A route's required scopes: a JSON list of distinct RFC 6749 §3.3 scope tokens."""
    if not isinstance(value, list):
        raise SettingsError(f"{where}: 'scopes' must be a JSON list of scope names")
    for scope in value:
        if not isinstance(scope, str) or not SCOPE_TOKEN.match(scope):
            raise SettingsError(
                f"{where}: {scope!r} is not a scope (visible ASCII but space, quote, backslash)"
            )
    return tuple(dict.fromkeys(value))


def _check_url(value: str, name: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SettingsError(f"{name}: expected an http(s) URL, got {value!r}")
    return value.rstrip("/")


def default_routes(auth_service_url: str) -> tuple[RouteConfig, ...]:
    """The auth service's prefixes; which operations are public comes from the spec."""
    return (
        RouteConfig("/api/v1/auth", auth_service_url, auth="spec"),
        RouteConfig("/api/v1/users", auth_service_url, auth="spec"),
        RouteConfig("/api/v1/audit-events", auth_service_url, auth="spec"),
        RouteConfig("/api/v1/oauth-clients", auth_service_url, auth="spec"),
        RouteConfig("/.well-known/jwks.json", auth_service_url, auth="none"),
        # The OAuth provider (spec: which of its operations take a token comes from there).
        RouteConfig("/oauth", auth_service_url, auth="spec"),
        RouteConfig("/userinfo", auth_service_url, auth="spec"),
        RouteConfig("/.well-known/openid-configuration", auth_service_url, auth="none"),
        RouteConfig("/.well-known/oauth-authorization-server", auth_service_url, auth="none"),
    )


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the gateway needs, validated."""

    port: int = 8000
    auth_service_url: str = "http://127.0.0.1:8001"
    redis_url: str | None = None
    jwt_algorithms: tuple[str, ...] = ("RS256",)
    jwt_secret: str | None = None
    jwt_issuer: str = "authgate"
    jwt_audience: str = "authgate-api"
    jwt_leeway_seconds: int = 5
    jwks_url: str | None = None
    jwks_min_refresh_seconds: float = 30.0
    jwks_max_age_seconds: float = 3600.0
    token_cache_size: int = 10000
    rate_limit_default: Rate = field(default_factory=lambda: Rate(600, 60))
    rate_limit_auth: Rate = field(default_factory=lambda: Rate(20, 60))
    rate_limit_fail_open: bool = True
    rate_limit_auth_fail_open: bool = False
    # SECURITY: with Redis down, refuse bearer requests (503) rather than let a revoked
    # session's access token through; GATEWAY_REVOCATION_FAIL_OPEN=true trades that away.
    revocation_fail_open: bool = False
    revocation_poll_seconds: float = 2.0
    # None: the embedded default, generated once under `<var_dir>/internal/` (create_app).
    internal_api_token: str | None = field(default=None, repr=False)
    var_dir: Path = DEFAULT_VAR_DIR
    rate_limit_key_prefix: str = "authgate:rl:"
    rate_limited_operations: tuple[str, ...] = (
        "login",
        "login_mfa",
        "register",
        "request_password_reset",
        "confirm_password_reset",
        "verify_email",
        "resend_verification_email",
    )
    cors_origins: tuple[str, ...] = ()
    trusted_proxies: tuple[Network, ...] = ()
    routes: tuple[RouteConfig, ...] = ()
    spec_path: Path = DEFAULT_SPEC_PATH
    connect_timeout: float = 2.0
    read_timeout: float = 30.0
    request_deadline: float = 60.0
    max_body_bytes: int = 1024 * 1024
    upstream_retries: int = 1
    upstream_ca_file: Path | None = None
    pool_size: int = 8
    breaker_failure_threshold: int = 5
    breaker_reset_seconds: float = 30.0
    # 0: off, the OS resolves upstream names per connection (see discovery.py).
    dns_refresh_seconds: float = 0.0
    redis_timeout_seconds: float = 0.25
    hsts_max_age: int = 31536000
    access_log: bool = True
    metrics: bool = True
    prometheus_multiproc_dir: str | None = None
    log_format: str = "json"
    otel_exporter_otlp_endpoint: str | None = None
    otel_service_name: str = DEFAULT_SERVICE_NAME

    def __post_init__(self) -> None:
        """Check the cross-field rules (HS256 needs a strong secret, routes need upstreams)."""
        for alg in self.jwt_algorithms:
            if alg not in SUPPORTED_ALGORITHMS:
                raise SettingsError(f"JWT_ALGORITHM: unsupported algorithm {alg!r}")
        if "HS256" in self.jwt_algorithms:
            if len(self.jwt_algorithms) > 1:
                # SECURITY: mixing HMAC with public-key algorithms invites key confusion.
                raise SettingsError("JWT_ALGORITHM: HS256 cannot be combined with other algorithms")
            if not self.jwt_secret or len(self.jwt_secret.encode()) < 32:
                raise SettingsError("JWT_SECRET: HS256 needs a secret of at least 32 bytes")
        token = self.internal_api_token
        if token is not None and len(token) < MIN_INTERNAL_TOKEN_LENGTH:
            raise SettingsError(
                f"INTERNAL_API_TOKEN: at least {MIN_INTERNAL_TOKEN_LENGTH} characters"
            )
        if self.log_format not in LOG_FORMATS:
            raise SettingsError(f"LOG_FORMAT: expected one of {sorted(LOG_FORMATS)}")
        endpoint = self.otel_exporter_otlp_endpoint
        if endpoint and urlsplit(endpoint).scheme not in ("http", "https"):
            # NOTE: the exporter speaks OTLP over HTTP only; a gRPC or bare host:port
            # endpoint would fail on every export, silently, long after start-up.
            raise SettingsError("OTEL_EXPORTER_OTLP_ENDPOINT: expected an http(s) URL")
        if not self.routes:
            object.__setattr__(self, "routes", default_routes(self.auth_service_url))

    @property
    def effective_jwks_url(self) -> str:
        """Where the verifier fetches the keys."""
        return self.jwks_url or f"{self.auth_service_url}/.well-known/jwks.json"

    @property
    def revocation_feed_url(self) -> str:
        """The auth service's feed of revoked sessions (GET, internal token)."""
        return f"{self.auth_service_url}{INTERNAL_PATH_PREFIX}v1/revoked-sessions"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read and validate every setting; raise SettingsError naming the variable."""
        env = EnvReader(os.environ if environ is None else environ, SettingsError)
        d = cls()  # the defaults are the fields' own, written once
        auth_url = _check_url(env.text("AUTH_SERVICE_URL", d.auth_service_url), "AUTH_SERVICE_URL")
        routes = list(default_routes(auth_url))
        for extra in _routes(env, "GATEWAY_ROUTES"):
            # NOTE: a configured prefix replaces a default one with the same prefix, in its
            # place: an upstream is named (metrics, readiness) by its first route's prefix,
            # and that name must not change when a default route is added.
            if any(r.prefix == extra.prefix for r in routes):
                routes = [extra if r.prefix == extra.prefix else r for r in routes]
            else:
                routes.append(extra)
        return cls(
            port=env.integer("GATEWAY_PORT", d.port, minimum=1, maximum=65535),
            auth_service_url=auth_url,
            redis_url=env.optional("REDIS_URL"),
            jwt_algorithms=env.csv("JWT_ALGORITHM", d.jwt_algorithms),
            jwt_secret=env.optional("JWT_SECRET"),
            jwt_issuer=env.text("JWT_ISSUER", d.jwt_issuer),
            jwt_audience=env.text("JWT_AUDIENCE", d.jwt_audience),
            jwt_leeway_seconds=env.integer(
                "GATEWAY_JWT_LEEWAY_SECONDS", d.jwt_leeway_seconds, minimum=0, maximum=300
            ),
            jwks_url=env.optional("GATEWAY_JWKS_URL"),
            jwks_min_refresh_seconds=env.number(
                "GATEWAY_JWKS_MIN_REFRESH_SECONDS", d.jwks_min_refresh_seconds, minimum=0.0
            ),
            jwks_max_age_seconds=env.number(
                "GATEWAY_JWKS_MAX_AGE_SECONDS", d.jwks_max_age_seconds, minimum=1.0
            ),
            token_cache_size=env.integer(
                "GATEWAY_TOKEN_CACHE_SIZE", d.token_cache_size, minimum=0, maximum=10_000_000
            ),
            rate_limit_default=_rate(env, "RATE_LIMIT_DEFAULT", d.rate_limit_default),
            rate_limit_auth=_rate(env, "RATE_LIMIT_AUTH", d.rate_limit_auth),
            rate_limit_fail_open=env.boolean("RATE_LIMIT_FAIL_OPEN", d.rate_limit_fail_open),
            rate_limit_auth_fail_open=env.boolean(
                "RATE_LIMIT_AUTH_FAIL_OPEN", d.rate_limit_auth_fail_open
            ),
            revocation_fail_open=env.boolean(
                "GATEWAY_REVOCATION_FAIL_OPEN", d.revocation_fail_open
            ),
            revocation_poll_seconds=env.number(
                "GATEWAY_REVOCATION_POLL_SECONDS", d.revocation_poll_seconds, minimum=0.05
            ),
            internal_api_token=env.optional("INTERNAL_API_TOKEN"),
            var_dir=Path(env.text("AUTHGATE_VAR_DIR", str(d.var_dir))),
            rate_limit_key_prefix=env.text(
                "GATEWAY_RATE_LIMIT_KEY_PREFIX", d.rate_limit_key_prefix
            ),
            rate_limited_operations=env.csv(
                "GATEWAY_AUTH_RATE_LIMITED_OPERATIONS", d.rate_limited_operations
            ),
            cors_origins=env.csv("CORS_ORIGINS"),
            trusted_proxies=env.networks("TRUSTED_PROXIES"),
            routes=tuple(routes),
            spec_path=Path(env.text("GATEWAY_OPENAPI_PATH", str(d.spec_path))),
            connect_timeout=env.number("GATEWAY_CONNECT_TIMEOUT", d.connect_timeout, minimum=0.01),
            read_timeout=env.number("GATEWAY_READ_TIMEOUT", d.read_timeout, minimum=0.01),
            request_deadline=env.number(
                "GATEWAY_REQUEST_DEADLINE_SECONDS", d.request_deadline, minimum=0.01
            ),
            max_body_bytes=env.integer(
                "GATEWAY_MAX_BODY_BYTES", d.max_body_bytes, minimum=0, maximum=1 << 34
            ),
            upstream_retries=env.integer(
                "GATEWAY_UPSTREAM_RETRIES", d.upstream_retries, minimum=0, maximum=5
            ),
            upstream_ca_file=_ca_file(env, "GATEWAY_UPSTREAM_CA_FILE"),
            pool_size=env.integer("GATEWAY_THREADS", d.pool_size, minimum=1, maximum=1024),
            breaker_failure_threshold=env.integer(
                "GATEWAY_BREAKER_FAILURES", d.breaker_failure_threshold, minimum=1, maximum=10_000
            ),
            breaker_reset_seconds=env.number(
                "GATEWAY_BREAKER_RESET_SECONDS", d.breaker_reset_seconds, minimum=0.01
            ),
            redis_timeout_seconds=env.number(
                "GATEWAY_REDIS_TIMEOUT_SECONDS", d.redis_timeout_seconds, minimum=0.001
            ),
            dns_refresh_seconds=env.number(
                "GATEWAY_DNS_REFRESH_SECONDS", d.dns_refresh_seconds, minimum=0.0
            ),
            hsts_max_age=env.integer(
                "GATEWAY_HSTS_MAX_AGE", d.hsts_max_age, minimum=0, maximum=1 << 31
            ),
            access_log=env.boolean("GATEWAY_ACCESS_LOG", d.access_log),
            metrics=env.boolean("GATEWAY_METRICS", d.metrics),
            prometheus_multiproc_dir=env.optional("PROMETHEUS_MULTIPROC_DIR"),
            log_format=env.text("LOG_FORMAT", d.log_format).lower(),
            otel_exporter_otlp_endpoint=env.optional("OTEL_EXPORTER_OTLP_ENDPOINT"),
            # NOTE: one .env often serves both services, and OTEL_SERVICE_NAME there names
            # the auth service; the gateway's own variable wins so its spans keep its name.
            otel_service_name=env.optional("GATEWAY_OTEL_SERVICE_NAME")
            or env.text("OTEL_SERVICE_NAME", d.otel_service_name),
        )


def _rate(env: EnvReader, name: str, default: Rate) -> Rate:
    raw = env.optional(name)
    return default if raw is None else Rate.parse(raw, name)


def _ca_file(env: EnvReader, name: str) -> Path | None:
    """A PEM file of CA certificates, checked now (a bad one fails at start-up)."""
    raw = env.optional(name)
    if raw is None:
        return None
    try:
        ssl.create_default_context(cafile=raw)
    except (OSError, ssl.SSLError) as ex:
        raise env.fail(
            name, f"not a readable PEM file of CA certificates ({ex.strerror or ex})"
        ) from None
    return Path(raw)


def _routes(env: EnvReader, name: str) -> list[RouteConfig]:
    raw = env.optional(name)
    if raw is None:
        return []
    try:
        items = json.loads(raw)
    except ValueError:
        raise env.fail(name, "not valid JSON") from None
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise env.fail(name, "expected a JSON list of route objects")
    return [RouteConfig.from_mapping(item, name) for item in items]
