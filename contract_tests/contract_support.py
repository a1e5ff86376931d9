"""Shared pieces of the contract suite: live servers, Hypothesis profiles, auth, checks.

Imported by the contract tests and their conftest (pytest puts this directory on
sys.path, as it does for tests/auth/auth_api.py). The process helpers are tests/'s
(tests/process_support.py): tests/ is put on sys.path here, since pytest puts it there
only when it collects tests/ too.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import requests
import schemathesis
from hypothesis import HealthCheck, Phase, settings
from process_support import REPO, start_gunicorn, stop, wait_http
from schemathesis.auths import AuthContext, AuthProvider
from schemathesis.checks import ALL_CHECKS
from schemathesis.internal.checks import (
    CheckConfig,
    CheckContext,
    NegativeDataRejectionConfig,
    PositiveDataAcceptanceConfig,
)
from schemathesis.models import Case
from schemathesis.specs.openapi import checks as openapi_checks

SPEC_PATH = REPO / "openapi" / "auth.yaml"
PYTHON = sys.executable

# Schemathesis 3.x parses OpenAPI 3.1 only when asked to.
schemathesis.experimental.OPEN_API_3_1.enable()

ADMIN_EMAIL = "contract-admin@example.com"
ADMIN_PASSWORD = "contract admin passphrase"
USER_EMAIL = "contract-user@example.com"
USER_PASSWORD = "contract user passphrase"
# Operations that may end the caller's sessions get a fresh login of a user of their own,
# so that the cached tokens of the contract user and admin stay alive.
SESSIONS_EMAIL = "contract-sessions@example.com"
SESSIONS_PASSWORD = "contract sessions passphrase"
SESSION_OPERATIONS = frozenset({"list_sessions", "end_session", "end_all_sessions"})

# ---------------------------------------------------------------------------------------
# Hypothesis profiles, chosen with CONTRACT_PROFILE=ci|deep (default ci).
# ---------------------------------------------------------------------------------------
_COMMON: dict[str, Any] = {
    # Every request goes over the network to gunicorn (and bcrypt for login/register):
    # per-example timing says nothing about correctness here.
    "deadline": None,
    # Schemathesis' strategies are large and some operations filter a lot (path ids that
    # must be UUIDs); these health checks would fail the run on speed, not on a finding.
    "suppress_health_check": [
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,
    ],
    "print_blob": True,
}
settings.register_profile(
    "contract-ci",
    max_examples=30,
    # Reproducible in CI: the same commit generates the same requests. Explicit examples
    # from the spec run first, then generated ones, then shrinking of any failure.
    derandomize=True,
    database=None,
    phases=[Phase.explicit, Phase.generate, Phase.target, Phase.shrink],
    stateful_step_count=8,
    **_COMMON,
)
settings.register_profile(
    "contract-deep",
    max_examples=400,
    derandomize=False,
    stateful_step_count=40,
    **_COMMON,
)
PROFILE_NAME = "contract-" + os.environ.get("CONTRACT_PROFILE", "ci").strip().lower()
if PROFILE_NAME not in ("contract-ci", "contract-deep"):
    raise RuntimeError("CONTRACT_PROFILE must be 'ci' or 'deep'")
PROFILE = settings.get_profile(PROFILE_NAME)
# The state machine walks sequences, each costing several requests: fewer of them. Only
# the generate phase: replaying or shrinking a sequence meets a server whose state has
# moved on (the email is taken now), which Hypothesis reports as a flaky strategy
# instead of the finding; the failing sequence is printed as it was run.
STATEFUL_PROFILE = settings(
    PROFILE,
    max_examples=15 if PROFILE_NAME == "contract-ci" else 150,
    phases=[Phase.generate],
)

# ---------------------------------------------------------------------------------------
# Checks: everything Schemathesis 3.39 has that applies to a live OpenAPI service.
# ---------------------------------------------------------------------------------------
# What our API may answer to invalid data: a documented client error, never a 2xx/5xx.
NEGATIVE_ALLOWED = ["400", "401", "403", "404", "409", "413", "415", "422"]
# What it may answer to schema-valid data. Everything except 422: a 422 to data the
# spec calls valid means the spec is looser than the service. 400 (wrong current
# password, unknown reset token), 401 (bad credentials), 403, 404 and 409 (email taken)
# are answers about *state*, which random valid data cannot know.
POSITIVE_ALLOWED = ["2xx", "400", "401", "403", "404", "409"]
_CHECK_CONFIG = CheckConfig(
    negative_data_rejection=NegativeDataRejectionConfig(allowed_statuses=NEGATIVE_ALLOWED),
    positive_data_acceptance=PositiveDataAcceptanceConfig(allowed_statuses=POSITIVE_ALLOWED),
)


def negative_data_rejection(ctx: CheckContext, response: Any, case: Case) -> bool | None:
    """Invalid data gets one of our documented client errors (NEGATIVE_ALLOWED).

    Unknown query parameters alone do not make a request invalid (OpenAPI cannot forbid
    them, and the services ignore them); the stock check knows that, but Schemathesis
    3.39 marks the *path* as negated even for operations without path parameters, which
    defeats its own exemption. That phantom mark is dropped here, nothing else.
    """
    if case.meta is not None and case.meta.path_parameters and not case.operation.path_parameters:
        case.meta = replace(case.meta, path_parameters=None)
    return openapi_checks.negative_data_rejection(
        replace(ctx, config=_CHECK_CONFIG), response, case
    )


# bcrypt's limit is 72 *bytes* of UTF-8; JSON Schema's maxLength counts characters, so
# the spec can only say it in prose (NewPassword's description). These fields carry it.
NEW_PASSWORD_FIELDS = ("password", "new_password")
BCRYPT_MAX_BYTES = 72


def over_bcrypt_limit(case: Case) -> set[str]:
    """The new-password fields of the body longer than 72 bytes of UTF-8."""
    body = case.body if isinstance(case.body, dict) else {}
    return {
        name
        for name in NEW_PASSWORD_FIELDS
        if isinstance(body.get(name), str)
        and len(body[name].encode("utf-8", "surrogatepass")) > BCRYPT_MAX_BYTES
    }


def unstorable_strings(case: Case) -> set[str]:
    """Body fields holding a NUL or an unpaired surrogate: valid JSON no database can keep."""
    body = case.body if isinstance(case.body, dict) else {}
    found = set()
    for name, value in body.items():
        if not isinstance(value, str):
            continue
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            found.add(name)
        if "\x00" in value:
            found.add(name)
    return found


def positive_data_acceptance(ctx: CheckContext, response: Any, case: Case) -> bool | None:
    """Schema-valid data is never refused as invalid (POSITIVE_ALLOWED).

    The documented exceptions (the spec's 422 description): a password within maxLength
    characters but over 72 bytes, and a string with a NUL or an unpaired surrogate, get a
    422 — and then the problem must name such a field.
    """
    if case.operation.method.upper() == "GET":
        exceptions: set[str] = set()
    else:
        exceptions = over_bcrypt_limit(case) | unstorable_strings(case)
    if response.status_code == 422 and exceptions:
        fields = {error.get("field") for error in response.json().get("errors", [])}
        assert fields & exceptions, f"this 422 must name one of {exceptions}, got {fields}"
        return None
    return openapi_checks.positive_data_acceptance(
        replace(ctx, config=_CHECK_CONFIG), response, case
    )


# ALL_CHECKS minus the stock negative_data_rejection, which is replaced by the same check
# configured with our statuses (its default list allows 5xx and omits 413/415).
CHECKS = (
    *(check for check in ALL_CHECKS if check is not openapi_checks.negative_data_rejection),
    negative_data_rejection,
    positive_data_acceptance,
    # Only fire on the cases Schemathesis' coverage phase makes (a missing required
    # header, an undeclared method); cheap, and correct for us when they do.
    openapi_checks.missing_required_header,
    openapi_checks.unsupported_method,
)
# Checks that only make sense on a sequence of calls (they follow the spec's links).
# NOTE: ensure_resource_availability is left out on purpose: it calls any 4xx on a
# link-fed request after a successful POST a lost resource, but our linked resources
# are single-use by design: a refresh token already rotated gets 409/401 (DESIGN §4),
# a user already deleted by an earlier step of the walk gets 404. Reading a created
# user back is asserted in contract_tests/test_sdk.py instead.
STATEFUL_CHECKS = (*CHECKS, openapi_checks.use_after_free)

# ---------------------------------------------------------------------------------------
# Authentication: a real user's token, an admin's token for admin operations.
# ---------------------------------------------------------------------------------------
# Admin-only operations, plus the self-or-admin ones: the spec's links hand them the ids
# of users created by register/create_user, which only an admin may read or change.
ADMIN_OPERATIONS = frozenset(
    {
        "list_users",
        "create_user",
        "delete_user",
        "get_user",
        "update_user",
        "unlock_user",
        "list_user_sessions",
        "end_user_sessions",
        "reset_user_mfa",
    }
)


def login(base_url: str, email: str, password: str) -> str:
    """Log in over HTTP and return the access token."""
    response = requests.post(
        f"{base_url}/api/v1/auth/login",
        json={"email": email, "password": password},
        timeout=30,
    )
    assert response.status_code == 200, f"login of {email} failed: {response.status_code}"
    return str(response.json()["access_token"])


def needs_token(case: Case) -> bool:
    """Whether the operation declares bearer security (none of ours is optional)."""
    security = case.operation.definition.raw.get("security")
    return bool(security)


class LiveTokens(AuthProvider):
    """Real tokens from the service under test, logged in over HTTP (cached a while)."""

    def get(self, case: Case, context: AuthContext) -> dict[str, str]:
        """Log in as the contract user and the contract admin."""
        base_url = case.operation.base_url or ""
        return {
            "user": login(base_url, USER_EMAIL, USER_PASSWORD),
            "admin": login(base_url, ADMIN_EMAIL, ADMIN_PASSWORD),
        }

    def set(self, case: Case, data: dict[str, str], context: AuthContext) -> None:
        """Send the admin's token to admin operations, the user's to the rest."""
        if not needs_token(case):
            return
        operation_id = case.operation.definition.raw["operationId"]
        if operation_id in SESSION_OPERATIONS:
            token = login(case.operation.base_url or "", SESSIONS_EMAIL, SESSIONS_PASSWORD)
        else:
            token = data["admin" if operation_id in ADMIN_OPERATIONS else "user"]
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {token}"}


def attach_auth(schema: Any) -> None:
    """Give a schema (or a from_pytest_fixture lazy schema) the live-token provider.

    NOTE: with from_pytest_fixture the provider must sit on the lazy schema: Schemathesis
    3.39 replaces the fixture schema's auth with the lazy one's even when that is empty.
    The cache is keyed by base URL, so each service gets tokens it issued itself.
    """
    schema.auth(
        refresh_interval=120,
        cache_by_key=lambda case, context: case.operation.base_url or "",
    )(LiveTokens)


# RFC 9110 §5.1 field names are tokens; gunicorn refuses control characters in values
# (RFC 9110 §5.5) with a 400 before any application code runs (a problem document, from
# deploy/gunicorn_worker.py, tested in tests/gateway/test_gateway_worker.py).
_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_BAD_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def http_valid_headers(context: Any, headers: dict[str, Any] | None) -> bool:
    """Keep only header sets that HTTP/1.1 can carry.

    Negative generation invents header names and values that are not HTTP at all
    (`2*j3m: \\x0c`); gunicorn rejects those requests before either app sees them, and
    no operation's responses could describe a request that is not HTTP. Everything HTTP
    can carry is still generated.
    """
    for name, value in (headers or {}).items():
        if not _TOKEN.match(name) or _BAD_VALUE.search(str(value)):
            return False
        try:
            str(value).encode("latin-1")
        except UnicodeEncodeError:
            return False
    return True


def configure(schema: Any) -> None:
    """Live tokens and HTTP-valid headers for a schema or a from_pytest_fixture lazy schema."""
    attach_auth(schema)
    schema.hooks.register("filter_headers")(http_valid_headers)


# Valid and invalid data for every operation.
GENERATION_METHODS = schemathesis.DataGenerationMethod.all()
GENERATION_CONFIG = schemathesis.GenerationConfig(
    # The Authorization header comes from LiveTokens, never from the generator: a
    # generated (invalid) token replaced by a real one would make a "negative" case that
    # is in fact valid. Missing and invalid tokens are still sent, by the ignored_auth
    # check, on every authenticated operation that succeeds.
    with_security_parameters=False,
)


def load_schema(base_url: str) -> schemathesis.schemas.BaseSchema:
    """The spec as a Schemathesis schema aimed at base_url."""
    return schemathesis.from_path(
        str(SPEC_PATH),
        base_url=base_url,
        data_generation_methods=GENERATION_METHODS,
        generation_config=GENERATION_CONFIG,
    )


def lazy_schema(fixture_name: str) -> Any:
    """A from_pytest_fixture schema with our generation settings, tokens and header rules."""
    schema = schemathesis.from_pytest_fixture(
        fixture_name,
        data_generation_methods=GENERATION_METHODS,
        generation_config=GENERATION_CONFIG,
    )
    configure(schema)
    return schema


# ---------------------------------------------------------------------------------------
# Live servers: real gunicorn processes with the deploy configs.
# ---------------------------------------------------------------------------------------
@dataclass
class Server:
    """A running gunicorn."""

    name: str
    url: str
    proc: subprocess.Popen[bytes]
    log_path: Path


def run_cli(env: dict[str, str], *args: str) -> str:
    """Run `python -m auth_service.cli ...`; fail with its output when it fails."""
    result = subprocess.run(
        [PYTHON, "-m", "auth_service.cli", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"cli {args} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def base_env(**values: str) -> dict[str, str]:
    """The current environment without anything a local .env might have set for us."""
    dropped = ("REDIS_URL", "DATABASE_URL", "GATEWAY_ROUTES", "AUTH_SERVICE_URL")
    env = {k: v for k, v in os.environ.items() if k not in dropped}
    env["PYTHONPATH"] = str(REPO)
    env.update(values)
    return env


@contextmanager
def gunicorn(
    name: str, config: str, env: dict[str, str], url: str, log_dir: Path
) -> Iterator[Server]:
    """Start gunicorn with a deploy config, wait for /healthz, always stop it."""
    log_path = log_dir / f"{name}.log"
    with log_path.open("wb") as log:
        proc = start_gunicorn(config, env, log)
    server = Server(name, url, proc, log_path)
    try:
        wait_http(f"{url}/healthz", 30, proc, status=200, log=log_path)
        yield server
    finally:
        stop(proc, grace=15)
