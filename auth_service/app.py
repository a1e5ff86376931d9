"""The application factory: builds every collaborator once and wires them together."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import falcon
from opentelemetry.trace import TracerProvider
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError, OperationalError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from auth_service import problems
from auth_service.authentication import BearerAuthentication, InternalAuthentication
from auth_service.context import AuthRequest
from auth_service.db.session import make_engine, make_sessionmaker
from auth_service.docs import ASSETS_ROUTE, DocsAssets
from auth_service.metrics import Metrics
from auth_service.middleware import RequestContext
from auth_service.oauth.server import TokenLookup, TokenSettings, build_server
from auth_service.oauth.store import OAuthStore
from auth_service.operations.audit import AuditOperations
from auth_service.operations.auth import AuthOperations
from auth_service.operations.internal import InternalOperations
from auth_service.operations.keys import KeyOperations
from auth_service.operations.oauth import OAuthOperations, discovery_document
from auth_service.operations.oauth_clients import OAuthClientOperations
from auth_service.operations.ops import OpsOperations
from auth_service.operations.security import SecurityOperations
from auth_service.operations.users import UserOperations
from auth_service.routing import add_spec_routes
from auth_service.security.passwords import PasswordHasher
from auth_service.security.secrets_box import SecretBox
from auth_service.security.tokens import KeyRing
from auth_service.services.accounts import AccountService
from auth_service.services.audit import AuditTrail
from auth_service.services.email_verification import EmailVerificationService
from auth_service.services.mailer import ConsoleMailer, Mailer, SmtpMailer
from auth_service.services.mfa import MfaService
from auth_service.services.oauth_clients import OAuthClientService
from auth_service.services.outbox import DeliveryEvents, MailSender, RetryPolicy
from auth_service.services.password_reset import PasswordResetService
from auth_service.services.revocation import RevocationFeed, RevocationList
from auth_service.services.sessions import (
    SessionEvents,
    SessionService,
    TokenPolicy,
)
from auth_service.services.throttle import Limit, LoginThrottler
from auth_service.settings import Settings
from auth_service.spec import Contract
from auth_service.tracing import INSTRUMENTATION_NAME, trace_engine
from auth_service.validation import SpecValidation
from authgate_common.problem_types import ProblemType
from authgate_common.secrets_file import internal_api_token
from authgate_common.tracing import RequestTracing, build_tracer_provider


@dataclass(frozen=True)
class Services:
    """The domain services of one process, for the app and for the CLI."""

    engine: Engine
    mail_engine: Engine
    key_ring: KeyRing
    accounts: AccountService
    sessions: SessionService
    password_resets: PasswordResetService
    revocations: RevocationList
    mail_sender: MailSender
    revocation_feed: RevocationFeed
    mfa: MfaService
    email_verification: EmailVerificationService
    audit: AuditTrail
    oauth_clients: OAuthClientService
    oauth_store: OAuthStore


def build_services(
    settings: Settings,
    *,
    mailer: Mailer | None = None,
    session_events: SessionEvents | None = None,
    mail_events: DeliveryEvents | None = None,
    tracer_provider: TracerProvider | None = None,
) -> Services:
    """Open the pool, load the keys and build the services (once per process)."""
    engine = make_engine(
        settings.database_url,
        pool_size=settings.database_pool_size,
        max_overflow=settings.database_max_overflow,
        pool_timeout=settings.database_pool_timeout_seconds,
    )
    if tracer_provider is not None:
        trace_engine(engine, tracer_provider)
    db = make_sessionmaker(engine)
    # SECURITY: a mail waits in the outbox with its reset link in clear until it is sent;
    # what writes or reads the outbox runs on an engine that never logs its parameters.
    # NOTE: sign-up and address changes (they mail a verification link) run on it too, so
    # a request waits for its pool no longer than for the main one.
    mail_engine = make_engine(
        settings.database_url,
        pool_timeout=settings.database_pool_timeout_seconds,
        hide_parameters=True,
    )
    if tracer_provider is not None:
        trace_engine(mail_engine, tracer_provider)
    mail_db = make_sessionmaker(mail_engine)
    hasher = PasswordHasher(settings.bcrypt_rounds)
    key_ring = KeyRing.load(
        settings.jwt_algorithm,
        settings.jwt_private_key_file,
        settings.jwt_secret,
        list(settings.jwt_previous_public_key_files),
        settings.var_dir / "keys",
    )
    revocations = RevocationList(settings.redis_url, settings.access_token_ttl_seconds)
    policy = TokenPolicy(
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        access_ttl_seconds=settings.access_token_ttl_seconds,
        refresh_ttl=timedelta(days=settings.refresh_token_expire_days),
        reuse_grace=timedelta(seconds=settings.refresh_reuse_grace_seconds),
    )
    throttler = LoginThrottler(
        db,
        per_address=Limit(settings.login_max_failures, settings.login_lockout_seconds),
        per_account=Limit(
            settings.login_max_failures_per_account, settings.login_account_window_seconds
        ),
    )
    # NOTE: a reset request rings it, so this process's sender resolves it at once.
    doorbell = threading.Event()
    password_resets = PasswordResetService(
        db,
        hasher,
        revocations,
        mail_sessions=mail_db,
        reset_url=settings.password_reset_url,
        token_ttl=timedelta(minutes=settings.password_reset_token_expire_minutes),
        doorbell=doorbell,
    )
    mfa = MfaService(
        db,
        hasher,
        SecretBox.load(settings.mfa_encryption_key, settings.var_dir / "keys"),
        revocations,
        throttler,
        issuer=settings.mfa_issuer,
    )
    email_verification = EmailVerificationService(
        mail_db, verify_url=settings.email_verification_url, doorbell=doorbell
    )

    return Services(
        engine=engine,
        mail_engine=mail_engine,
        key_ring=key_ring,
        accounts=AccountService(
            db,
            hasher,
            revocations,
            throttler,
            email_verification,
            mail_sessions=mail_db,
            allow_registration=settings.allow_registration,
            require_verification=settings.require_email_verification,
        ),
        sessions=SessionService(
            db,
            hasher,
            key_ring,
            policy,
            revocations,
            throttler,
            mfa,
            events=session_events,
            require_verification=settings.require_email_verification,
        ),
        password_resets=password_resets,
        revocations=revocations,
        mail_sender=MailSender(
            mail_db,
            mailer or make_mailer(settings),
            RetryPolicy(
                base_seconds=settings.mail_retry_base_seconds,
                max_seconds=settings.mail_retry_max_seconds,
                max_attempts=settings.mail_max_attempts,
            ),
            producers=[password_resets.process_requests],
            events=mail_events,
            poll_seconds=settings.mail_poll_seconds,
            doorbell=doorbell,
        ),
        revocation_feed=RevocationFeed(db, settings.access_token_ttl_seconds),
        mfa=mfa,
        email_verification=email_verification,
        audit=AuditTrail(db, settings.audit_retention_days),
        oauth_clients=OAuthClientService(
            db, api_scopes=settings.oauth_api_scopes, revocations=revocations
        ),
        oauth_store=OAuthStore(
            db,
            revocations,
            refresh_ttl=policy.refresh_ttl,
            reuse_grace=policy.reuse_grace,
        ),
    )


def make_mailer(settings: Settings) -> Mailer:
    """SMTP when SMTP_HOST is set; the console mailer in development."""
    if not settings.smtp_host:
        return ConsoleMailer()
    return SmtpMailer(
        settings.smtp_host,
        settings.smtp_port,
        settings.smtp_from,
        username=settings.smtp_username,
        password=settings.smtp_password,
        starttls=settings.smtp_starttls,
    )


@dataclass(frozen=True)
class AuthService:
    """The WSGI app and the mail sender that runs beside it (started by the caller)."""

    app: falcon.App[falcon.Request, falcon.Response]
    mail_sender: MailSender


def create_app(
    settings: Settings,
    *,
    mailer: Mailer | None = None,
    contract: Contract | None = None,
    tracer_provider: TracerProvider | None = None,
) -> falcon.App[AuthRequest, falcon.Response]:
    """Build the auth service's WSGI app (its mail sender is not started)."""
    return create_service(
        settings, mailer=mailer, contract=contract, tracer_provider=tracer_provider
    ).app


def create_service(
    settings: Settings,
    *,
    mailer: Mailer | None = None,
    contract: Contract | None = None,
    tracer_provider: TracerProvider | None = None,
) -> AuthService:
    """Build the auth service's WSGI app; refuses to start if spec and responders drift.

    Tests pass an already loaded `contract`: validating the spec takes about a second.
    Tracing is on when a `tracer_provider` is passed (tests) or OTEL_EXPORTER_OTLP_ENDPOINT
    is set; otherwise no tracing code runs at all. The mail sender is returned unstarted:
    threads belong in the process that serves (a gunicorn worker), not where apps are built.
    """
    contract = contract or Contract.from_file(settings.spec_path)
    if tracer_provider is None:
        tracer_provider = build_tracer_provider(
            settings.otel_exporter_otlp_endpoint, settings.otel_service_name
        )
    metrics = Metrics(settings.prometheus_multiproc_dir)
    services = build_services(
        settings,
        mailer=mailer,
        session_events=metrics,
        mail_events=metrics,
        tracer_provider=tracer_provider,
    )
    metrics.watch_backlog(services.mail_sender.backlog)
    middleware: list[Any] = []
    if tracer_provider is not None:
        # First, so its span is current for everything after it and ends last.
        middleware.append(RequestTracing(tracer_provider, INSTRUMENTATION_NAME))
    app = falcon.App(
        request_type=AuthRequest,
        middleware=[
            *middleware,
            RequestContext(metrics, settings.trusted_proxies),
            BearerAuthentication(
                contract,
                services.key_ring,
                issuer=settings.jwt_issuer,
                audience=settings.jwt_audience,
                load_principal=services.sessions.principal,
            ),
            InternalAuthentication(
                contract, internal_api_token(settings.internal_api_token, settings.var_dir)
            ),
            SpecValidation(
                contract, settings.response_validation, on_breach=metrics.contract_breach
            ),
        ],
    )
    # NOTE: the body is read and parsed by SpecValidation, never by Falcon's media handlers.
    app.req_options.strip_url_path_trailing_slash = False
    problems.install(app)
    app.add_error_handler(SQLAlchemyError, _database_unavailable)
    add_spec_routes(
        app,
        contract,
        [
            AuthOperations(
                services.accounts,
                services.sessions,
                services.password_resets,
                services.email_verification,
            ),
            UserOperations(services.accounts),
            OAuthClientOperations(services.oauth_clients),
            SecurityOperations(services.sessions, services.mfa),
            AuditOperations(services.audit),
            KeyOperations(services.key_ring),
            InternalOperations(services.revocation_feed),
            oauth_operations(settings, services),
            OpsOperations(
                contract,
                {
                    "database": lambda: _database_ready(services.engine),
                    "redis": services.revocations.ping,
                },
                metrics,
            ),
        ],
    )
    app.add_route(ASSETS_ROUTE, DocsAssets())
    return AuthService(app=app, mail_sender=services.mail_sender)


def oauth_operations(settings: Settings, services: Services) -> OAuthOperations:
    """The OAuth 2.0 / OpenID Connect provider (Authlib's server over our store and keys)."""
    token_settings = TokenSettings(
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        access_ttl_seconds=settings.access_token_ttl_seconds,
        id_token_ttl_seconds=settings.access_token_ttl_seconds,
    )
    server = build_server(
        services.oauth_store, services.key_ring, token_settings, settings.oauth_api_scopes
    )
    return OAuthOperations(
        server,
        services.oauth_store,
        services.sessions,
        TokenLookup(services.oauth_store, services.key_ring, token_settings),
        discovery_document(
            settings.jwt_issuer,
            settings.public_url,
            server.scopes_supported,
            services.key_ring.algorithm,
        ),
        secure_cookie=settings.public_url.startswith("https://"),
    )


def _database_ready(engine: Engine) -> bool:
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except SQLAlchemyError:
        return False
    return True


def _database_unavailable(
    req: falcon.Request, resp: falcon.Response, ex: SQLAlchemyError, params: dict[str, Any]
) -> None:
    """A lost database is a fast 503 the client may retry; other SQL errors are bugs."""
    lost = isinstance(ex, OperationalError | PoolTimeout) or (
        isinstance(ex, DBAPIError) and ex.connection_invalidated
    )
    if lost:
        raise problems.HTTPProblem(
            ProblemType.DATABASE_UNAVAILABLE,
            detail="The database is unavailable; retry shortly.",
            headers={"Retry-After": "5"},
        )
    problems.handle_unexpected_error(req, resp, ex, params)
