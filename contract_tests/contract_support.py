"""Shared pieces of the contract suite: live servers, Schemathesis config, auth, referee.

Imported by the contract tests and their conftest (pytest puts this directory on
sys.path, as it does for tests/auth/auth_api.py). The process helpers are tests/'s
(tests/process_support.py): tests/ is put on sys.path here, since pytest puts it there
only when it collects tests/ too.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import hypothesis
import requests
import schemathesis
from process_support import (
    REPO,
    TEST_INTERNAL_API_TOKEN,
    start_gunicorn,
    stop,
    wait_http,
    wait_listeners,
)

SPEC_PATH = REPO / "openapi" / "auth.yaml"
CONFIG_PATH = REPO / "schemathesis.toml"
PYTHON = sys.executable

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
# Volume: schemathesis.toml holds the CI profile (checks, phases, modes, examples);
# CONTRACT_PROFILE=deep (make contract-deep) raises the example and step counts.
# ---------------------------------------------------------------------------------------
PROFILE = os.environ.get("CONTRACT_PROFILE", "ci").strip().lower()
if PROFILE not in ("ci", "deep"):
    raise RuntimeError("CONTRACT_PROFILE must be 'ci' or 'deep'")
DEEP = PROFILE == "deep"
DEEP_MAX_EXAMPLES = 300
# The state machine walks scenarios of several requests each: fewer of them.
STATEFUL_SCENARIOS = 150 if DEEP else 15
STATEFUL_MAX_STEPS = 40 if DEEP else 8


def load_config() -> schemathesis.Config:
    """schemathesis.toml, its hooks imported as the module the referee imports too."""
    data = tomllib.loads(CONFIG_PATH.read_text(encoding="utf-8"))
    # NOTE: Schemathesis would execute the `hooks` file again under another module name
    # (registering its hooks twice) and resolves its path against the working directory,
    # which under pytest may not be the repository root. It is on sys.path here.
    assert data.pop("hooks") == "contract_tests/schemathesis_hooks.py"
    importlib.import_module("schemathesis_hooks")
    if DEEP:
        data["generation"]["max-examples"] = DEEP_MAX_EXAMPLES
        data["generation"]["deterministic"] = False
    return schemathesis.Config.from_dict(data)


def stateful_settings() -> hypothesis.settings:
    """Hypothesis settings for the state machine (scenarios and steps by profile)."""
    return hypothesis.settings(
        max_examples=STATEFUL_SCENARIOS,
        stateful_step_count=STATEFUL_MAX_STEPS,
        # Only generation: replaying or shrinking a scenario meets a server whose state
        # has moved on (the email is taken now), which Hypothesis reports as flaky
        # instead of the finding; the failing scenario is printed as it was run.
        phases=[hypothesis.Phase.generate],
        derandomize=not DEEP,
        database=None,
        deadline=None,
        suppress_health_check=list(hypothesis.HealthCheck),
    )


# ---------------------------------------------------------------------------------------
# Authentication: a real user's token, an admin's token for admin operations.
# ---------------------------------------------------------------------------------------
# Admin-only operations, plus the self-or-admin ones: the spec's links hand them the ids
# of users created by register/create_user, which only an admin may read or change.
INTERNAL_TOKEN = TEST_INTERNAL_API_TOKEN
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
        "list_audit_events",
        "list_oauth_clients",
        "create_oauth_client",
        "get_oauth_client",
        "replace_oauth_client",
        "delete_oauth_client",
        "rotate_oauth_client_secret",
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


def is_internal(operation: Any) -> bool:
    """Whether only the gateway may call it (tag `internal`): the gateway never routes it."""
    return "internal" in operation.get("tags", [])


def operation_id(case: Any) -> str:
    """The spec's operationId of the case's operation."""
    return str(case.operation.definition.raw.get("operationId", ""))


class LiveTokens:
    """Real tokens from the service under test, logged in over HTTP (cached a while)."""

    def get(self, case: Any, context: Any) -> dict[str, str]:
        """Log in as the contract user and the contract admin."""
        base_url = case.operation.base_url or ""
        return {
            "user": login(base_url, USER_EMAIL, USER_PASSWORD),
            "admin": login(base_url, ADMIN_EMAIL, ADMIN_PASSWORD),
        }

    def set(self, case: Any, data: dict[str, str], context: Any) -> None:
        """Send the admin's token to admin operations, the user's to the rest."""
        if is_internal(case.operation.definition.raw):
            case.headers["X-Internal-Token"] = INTERNAL_TOKEN
            return
        if not case.operation.definition.raw.get("security"):
            return
        if operation_id(case) in SESSION_OPERATIONS:
            token = login(case.operation.base_url or "", SESSIONS_EMAIL, SESSIONS_PASSWORD)
        else:
            token = data["admin" if operation_id(case) in ADMIN_OPERATIONS else "user"]
        case.headers["Authorization"] = f"Bearer {token}"


def load_schema(base_url: str) -> Any:
    """The spec as a Schemathesis schema aimed at base_url, with live tokens.

    The token cache is keyed by base URL, so each service gets tokens it issued itself.
    """
    schema = schemathesis.openapi.from_path(SPEC_PATH, config=load_config())
    schema.config.update(base_url=base_url)
    schema.auth(
        refresh_interval=120,
        cache_by_key=lambda case, context: case.operation.base_url or "",
    )(LiveTokens)
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
    # The same on both services: the gateway reads the auth service's revocation feed.
    env["INTERNAL_API_TOKEN"] = INTERNAL_TOKEN
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
        wait_listeners(int(url.rsplit(":", 1)[1]), int(env.get("WEB_CONCURRENCY", "2")))
        yield server
    finally:
        stop(proc, grace=15)
