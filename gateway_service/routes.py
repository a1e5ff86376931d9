"""The route table: path prefix to upstream, token and rate-limit policy per request."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from authgate_common.access import Access, operation_access
from authgate_common.secrets_file import INTERNAL_PATH_PREFIX
from gateway_service.settings import Rate, RouteConfig, Settings, SettingsError

HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
_PARAM_RE = re.compile(r"\{[^/{}]+\}")
# What the gateway checks for each reading of an operation's `security`.
_TOKEN_POLICY = {Access.PUBLIC: "none", Access.OPTIONAL: "optional", Access.REQUIRED: "required"}
# A spec-routed request whose method the spec does not declare for its path.
_UNDECLARED = "undeclared"


@dataclass(frozen=True, slots=True)
class Decision:
    """What the gateway does with one request: where it goes and what it must pass."""

    prefix: str
    upstream: str
    access: str  # token policy: "required", "optional" or "none"
    rate: Rate | None
    policy: str  # rate-limit bucket name: "default", "auth:<operationId>", or the literal rate
    fail_open: bool
    # The methods the spec declares for the path, when the request's is not one of them.
    allow: tuple[str, ...] | None = None
    # Whether the spec vouches for this route's error bodies, HTML ones included (the
    # OAuth sign-in pages answer 400/401/403/429 with a page, never problem+json).
    spec_bodies: bool = False


@dataclass(frozen=True, slots=True)
class _Operation:
    method: str
    pattern: re.Pattern[str]
    operation_id: str
    access: Access


def load_spec(path: Path) -> dict[str, Any]:
    """Read the OpenAPI document once at start-up."""
    try:
        with path.open(encoding="utf-8") as fh:
            spec = yaml.safe_load(fh)
    except OSError as ex:
        raise SettingsError(f"GATEWAY_OPENAPI_PATH: cannot read {path}: {ex.strerror}") from None
    if not isinstance(spec, dict) or not isinstance(spec.get("paths"), dict):
        raise SettingsError(f"GATEWAY_OPENAPI_PATH: {path} is not an OpenAPI document")
    return spec


def template_pattern(template: str) -> re.Pattern[str]:
    """Compile an OpenAPI path template into an anchored regular expression."""
    pieces = _PARAM_RE.split(template)
    return re.compile("^" + "[^/]+".join(re.escape(piece) for piece in pieces) + "$")


def spec_operations(spec: Mapping[str, Any]) -> list[_Operation]:
    """List each operation with the access its effective `security` asks for."""
    global_security = spec.get("security", [])
    operations = []
    for template, item in spec["paths"].items():
        for method in HTTP_METHODS:
            operation = item.get(method) if isinstance(item, dict) else None
            if not isinstance(operation, dict):
                continue
            operations.append(
                _Operation(
                    method=method.upper(),
                    pattern=template_pattern(template),
                    operation_id=str(operation.get("operationId", "")),
                    access=operation_access(operation, global_security),
                )
            )
    return operations


class RouteTable:
    """Resolves a normalised path and method to a Decision, longest prefix first."""

    def __init__(self, settings: Settings, spec: Mapping[str, Any]) -> None:
        """Build the table once; refuse configured operations the spec does not have."""
        self._routes = sorted(settings.routes, key=lambda r: len(r.prefix), reverse=True)
        operations = spec_operations(spec)
        self._settings = settings
        known = {op.operation_id for op in operations}
        missing = [op for op in settings.rate_limited_operations if op not in known]
        if missing:
            raise SettingsError(
                f"GATEWAY_AUTH_RATE_LIMITED_OPERATIONS: not in the spec: {', '.join(missing)}"
            )
        wanted = set(settings.rate_limited_operations)
        # PERF: per method, in spec order, so a request scans only its method's operations.
        self._by_method = _by_method(operations)
        self._sensitive_by_method = _by_method(
            [op for op in operations if op.operation_id in wanted]
        )
        self._policies = {"auth": self._rate_policy("auth")}
        for route in self._routes:
            self._policies[route.rate_limit] = self._rate_policy(route.rate_limit)

    @property
    def upstreams(self) -> list[str]:
        """Distinct upstream base URLs, in route order."""
        return list(dict.fromkeys(route.upstream for route in self._routes))

    def resolve(self, method: str, path: str) -> Decision | None:
        """Return the decision for this request, or None when no route matches."""
        route = self._match_prefix(path)
        if route is None:
            return None
        lookup_method = "GET" if method == "HEAD" else method
        access = self._token_policy(route, lookup_method, path)
        if access == _UNDECLARED:
            allow = self._allowed(path)
            if allow:
                return Decision(route.prefix, route.upstream, "required", None, "", True, allow)
            # SECURITY: anything the spec does not declare public needs a token.
            access = "required"
        policy = route.rate_limit
        rate, fail_open = self._policies[policy]
        if policy == "default":
            sensitive = self._sensitive_operation(route, lookup_method, path)
            if sensitive is not None:
                # NOTE: one bucket per operation, so a login does not eat the register budget.
                policy = f"auth:{sensitive}"
                rate, fail_open = self._policies["auth"]
        return Decision(
            route.prefix,
            route.upstream,
            access,
            rate,
            policy,
            fail_open,
            spec_bodies=route.auth == "spec",
        )

    def _match_prefix(self, path: str) -> RouteConfig | None:
        # SECURITY: the auth service's internal endpoints (the revocation feed) are for the
        # gateway alone; no route, not even a catch-all "/", may reach them.
        lowered = path.lower()
        if lowered.startswith(INTERNAL_PATH_PREFIX) or lowered == INTERNAL_PATH_PREFIX[:-1]:
            return None
        for route in self._routes:
            prefix = route.prefix
            if prefix == "/" or path == prefix or path.startswith(prefix + "/"):
                return route
        return None

    def _token_policy(self, route: RouteConfig, method: str, path: str) -> str:
        if route.auth != "spec":
            return route.auth
        for op in self._by_method.get(method, ()):
            if op.pattern.match(path):
                return _TOKEN_POLICY[op.access]
        return _UNDECLARED

    def _allowed(self, path: str) -> tuple[str, ...]:
        """The methods the spec declares for this path (HEAD wherever GET is)."""
        methods = [
            method
            for method, ops in self._by_method.items()
            if any(op.pattern.match(path) for op in ops)
        ]
        if "GET" in methods:
            methods.append("HEAD")
        return tuple(methods)

    def _sensitive_operation(self, route: RouteConfig, method: str, path: str) -> str | None:
        if route.auth != "spec":
            return None
        for op in self._sensitive_by_method.get(method, ()):
            if op.pattern.match(path):
                return op.operation_id
        return None

    def _rate_policy(self, policy: str) -> tuple[Rate | None, bool]:
        settings = self._settings
        if policy == "none":
            return None, True
        if policy == "auth":
            return settings.rate_limit_auth, settings.rate_limit_auth_fail_open
        if policy == "default":
            return settings.rate_limit_default, settings.rate_limit_fail_open
        return Rate.parse(policy, "GATEWAY_ROUTES"), settings.rate_limit_fail_open


def _by_method(operations: list[_Operation]) -> dict[str, list[_Operation]]:
    grouped: dict[str, list[_Operation]] = {}
    for op in operations:
        grouped.setdefault(op.method, []).append(op)
    return grouped
