"""Static checks of the contract, openapi/auth.yaml: structure, conventions, examples."""

from __future__ import annotations

import json
import os
import re
import subprocess
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from openapi_spec_validator import validate
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from authgate_common.problem_types import PROBLEM_TYPE_BASE, ProblemType

SPEC_PATH = Path(__file__).resolve().parents[1] / "openapi" / "auth.yaml"
SPEC: dict[str, Any] = yaml.safe_load(SPEC_PATH.read_text(encoding="utf-8"))
SPEC_URI = "urn:authgate:openapi"

HTTP_METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")
PUBLIC: list[dict[str, list[str]]] = []
BEARER = [{"bearerAuth": []}]
INTERNAL = [{"internalToken": []}]
OAUTH_BEARER = [{"oauthAccessToken": []}]
SECURITY_KINDS = {
    "public": PUBLIC,
    "bearer": BEARER,
    "internal": INTERNAL,
    "oauth": OAUTH_BEARER,
}
PROBLEM_REF = "#/components/schemas/Problem"
GATEWAY_STATUSES = {"429", "502", "503", "504"}
BODY_STATUSES = {"400", "413", "415", "422"}
FORM_BODY_STATUSES = {"400", "413"}
FORM = "application/x-www-form-urlencoded"
OAUTH_ERROR_REF = "#/components/schemas/OAuthErrorBody"
HTML_PAGE_REF = "#/components/schemas/OAuthHtmlPage"
# Actions on a resource named by the path alone: POSTs that take no body.
BODYLESS_POSTS = {"unlock_user"}
# DELETEs that need proof in a body (password and code) before removing a factor.
BODY_DELETES = {"disable_totp"}
# The one schema allowed to be free-form: the OpenAPI document served by get_openapi.
FREE_FORM_REFS = {"#/components/schemas/OpenAPIDocument"}

# The team plan's API table: method, path, operationId, security, tag.
EXPECTED_OPERATIONS = {
    ("post", "/api/v1/auth/register"): ("register", "public", "auth"),
    ("post", "/api/v1/auth/login"): ("login", "public", "auth"),
    ("post", "/api/v1/auth/refresh"): ("refresh", "public", "auth"),
    ("post", "/api/v1/auth/logout"): ("logout", "public", "auth"),
    ("get", "/api/v1/auth/me"): ("get_me", "bearer", "auth"),
    ("post", "/api/v1/auth/password-reset"): ("request_password_reset", "public", "auth"),
    ("post", "/api/v1/auth/password-reset/confirm"): ("confirm_password_reset", "public", "auth"),
    ("get", "/api/v1/users"): ("list_users", "bearer", "users"),
    ("post", "/api/v1/users"): ("create_user", "bearer", "users"),
    ("get", "/api/v1/users/{user_id}"): ("get_user", "bearer", "users"),
    ("put", "/api/v1/users/{user_id}"): ("update_user", "bearer", "users"),
    ("delete", "/api/v1/users/{user_id}"): ("delete_user", "bearer", "users"),
    ("put", "/api/v1/users/me/password"): ("change_password", "bearer", "users"),
    ("post", "/api/v1/users/{user_id}/unlock"): ("unlock_user", "bearer", "users"),
    ("get", "/api/v1/auth/sessions"): ("list_sessions", "bearer", "sessions"),
    ("delete", "/api/v1/auth/sessions"): ("end_all_sessions", "bearer", "sessions"),
    ("delete", "/api/v1/auth/sessions/{session_id}"): ("end_session", "bearer", "sessions"),
    ("get", "/api/v1/users/{user_id}/sessions"): ("list_user_sessions", "bearer", "users"),
    ("delete", "/api/v1/users/{user_id}/sessions"): ("end_user_sessions", "bearer", "users"),
    ("post", "/api/v1/auth/mfa/totp"): ("start_totp_enrolment", "bearer", "mfa"),
    ("post", "/api/v1/auth/mfa/totp/confirm"): ("confirm_totp_enrolment", "bearer", "mfa"),
    ("delete", "/api/v1/auth/mfa/totp"): ("disable_totp", "bearer", "mfa"),
    ("post", "/api/v1/auth/mfa/recovery-codes"): ("regenerate_recovery_codes", "bearer", "mfa"),
    ("post", "/api/v1/auth/login/mfa"): ("login_mfa", "public", "mfa"),
    ("delete", "/api/v1/users/{user_id}/mfa"): ("reset_user_mfa", "bearer", "users"),
    ("get", "/.well-known/jwks.json"): ("get_jwks", "public", "keys"),
    ("get", "/healthz"): ("healthz", "public", "ops"),
    ("get", "/readyz"): ("readyz", "public", "ops"),
    ("get", "/metrics"): ("get_metrics", "public", "ops"),
    ("get", "/openapi.json"): ("get_openapi", "public", "ops"),
    ("get", "/docs"): ("get_docs", "public", "ops"),
    ("get", "/internal/v1/revoked-sessions"): ("list_revoked_sessions", "internal", "internal"),
    ("get", "/oauth/authorize"): ("start_authorization", "public", "oauth"),
    ("post", "/oauth/authorize"): ("continue_authorization", "public", "oauth"),
    ("post", "/oauth/token"): ("issue_token", "public", "oauth"),
    ("post", "/oauth/introspect"): ("introspect_token", "public", "oauth"),
    ("post", "/oauth/revoke"): ("revoke_token", "public", "oauth"),
    ("get", "/userinfo"): ("get_userinfo", "oauth", "oauth"),
    ("get", "/.well-known/openid-configuration"): ("get_openid_configuration", "public", "oauth"),
    ("get", "/.well-known/oauth-authorization-server"): (
        "get_authorization_server_metadata",
        "public",
        "oauth",
    ),
}

# README's API table: the success status and the notable errors of each operation.
EXPECTED_STATUSES = {
    "register": {"201", "403", "409", "422"},
    "login": {"200", "401", "403", "422", "429"},
    "refresh": {"200", "401", "409"},
    "logout": {"204", "422"},
    "get_me": {"200", "401"},
    "request_password_reset": {"202", "422"},
    "confirm_password_reset": {"204", "400", "422"},
    "list_users": {"200", "401", "403"},
    "create_user": {"201", "409", "422"},
    "get_user": {"200", "403", "404"},
    "update_user": {"200", "403", "404", "409", "422"},
    "delete_user": {"204", "404", "409"},
    "change_password": {"204", "400", "422", "429"},
    "unlock_user": {"204", "401", "403", "404"},
    "list_sessions": {"200", "401"},
    "end_all_sessions": {"204", "401"},
    "end_session": {"204", "401", "404"},
    "list_user_sessions": {"200", "401", "403", "404"},
    "end_user_sessions": {"204", "401", "403", "404"},
    "start_totp_enrolment": {"200", "400", "409", "429"},
    "confirm_totp_enrolment": {"200", "400", "409"},
    "disable_totp": {"204", "400", "409", "429"},
    "regenerate_recovery_codes": {"200", "400", "409", "429"},
    "login_mfa": {"200", "401", "422", "429"},
    "reset_user_mfa": {"204", "401", "403", "404"},
    "get_jwks": {"200"},
    "healthz": {"200"},
    "readyz": {"200", "503"},
    "get_metrics": {"200"},
    "get_openapi": {"200"},
    "get_docs": {"200"},
    "list_revoked_sessions": {"200", "401", "422"},
    "start_authorization": {"200", "302", "400", "422"},
    "continue_authorization": {"200", "303", "400", "401", "403", "429"},
    "issue_token": {"200", "400", "401"},
    "introspect_token": {"200", "400", "401"},
    "revoke_token": {"200", "400", "401"},
    "get_userinfo": {"200", "401", "403"},
    "get_openid_configuration": {"200"},
    "get_authorization_server_metadata": {"200"},
}


def resolve(node: Any, pointer: str = "") -> tuple[Any, str]:
    """Follow local `$ref`s; return the target and its JSON pointer."""
    seen = set()
    while isinstance(node, dict) and "$ref" in node:
        ref = node["$ref"]
        assert ref.startswith("#/"), f"only local $refs are allowed, got {ref!r} at {pointer}"
        assert ref not in seen, f"$ref cycle through {ref!r} at {pointer}"
        seen.add(ref)
        target: Any = SPEC
        for part in ref[2:].split("/"):
            part = part.replace("~1", "/").replace("~0", "~")
            assert part in target, f"dangling $ref {ref!r} at {pointer}"
            target = target[part]
        node, pointer = target, ref[1:]
    return node, pointer


def escape(token: str) -> str:
    """Escape one JSON-pointer token."""
    return token.replace("~", "~0").replace("/", "~1")


def iter_operations() -> Iterator[tuple[str, str, dict[str, Any], dict[str, Any]]]:
    """Yield (method, path, operation, path item) for every operation."""
    for path, item in SPEC["paths"].items():
        for method in HTTP_METHODS:
            if method in item:
                yield method, path, item[method], item


Operation = tuple[str, str, dict[str, Any], dict[str, Any]]
OPERATIONS = list(iter_operations())
OP_IDS = [
    f"{op.get('operationId', '?')}:{method.upper()} {path}" for method, path, op, _ in OPERATIONS
]


def is_form_body(op: dict[str, Any]) -> bool:
    """Whether the operation takes an OAuth form (RFC 6749 §3.2) instead of JSON."""
    return FORM in resolve(op.get("requestBody", {}))[0].get("content", {})


def is_protocol_error(content: dict[str, Any]) -> bool:
    """An OAuth endpoint's own error: RFC 6749 §5.2 JSON or an HTML page (the problem+json
    ones of the gateway still follow the rule)."""
    if list(content) == ["application/json"]:
        return content["application/json"].get("schema") == {"$ref": OAUTH_ERROR_REF}
    if list(content) == ["text/html"]:
        return content["text/html"].get("schema") == {"$ref": HTML_PAGE_REF}
    return False


def op_name(method: str, path: str, op: dict[str, Any]) -> str:
    """How an assertion message names an operation."""
    return f"{op.get('operationId', '<no operationId>')} ({method.upper()} {path})"


def parameters_of(op: dict[str, Any], item: dict[str, Any]) -> list[dict[str, Any]]:
    """The operation's parameters, path-level ones included, resolved."""
    return [resolve(p)[0] for p in [*item.get("parameters", []), *op.get("parameters", [])]]


def pointer_of(method: str, path: str) -> str:
    """The JSON pointer of an operation in the spec."""
    return f"/paths/{escape(path)}/{method}"


def responses_of(
    method: str, path: str, op: dict[str, Any]
) -> Iterator[tuple[str, dict[str, Any], str]]:
    """Yield (status, resolved response, its JSON pointer) for every response of an operation."""
    for status, response in op.get("responses", {}).items():
        resolved, pointer = resolve(response, f"{pointer_of(method, path)}/responses/{status}")
        yield str(status), resolved, pointer


def iter_schemas(
    schema: Any, where: str, seen: set[str] | None = None
) -> Iterator[tuple[str, dict[str, Any], str | None]]:
    """Yield (location, schema, $ref it came through) for a schema and all its subschemas."""
    seen = set() if seen is None else seen
    ref = schema.get("$ref") if isinstance(schema, dict) else None
    if ref is not None:
        if ref in seen:
            return
        seen.add(ref)
        schema, _ = resolve(schema, where)
        where = f"{where} -> {ref}"
    if not isinstance(schema, dict):
        return
    yield where, schema, ref
    for key in ("properties", "patternProperties", "$defs"):
        for name, sub in schema.get(key, {}).items():
            yield from iter_schemas(sub, f"{where}.{key}.{name}", seen)
    for key in (
        "items",
        "additionalProperties",
        "propertyNames",
        "contains",
        "not",
        "if",
        "then",
        "else",
    ):
        if isinstance(schema.get(key), dict):
            yield from iter_schemas(schema[key], f"{where}.{key}", seen)
    for key in ("allOf", "anyOf", "oneOf", "prefixItems"):
        for index, sub in enumerate(schema.get(key, [])):
            yield from iter_schemas(sub, f"{where}.{key}[{index}]", seen)


def operation_schemas(
    method: str, path: str, op: dict[str, Any], item: dict[str, Any]
) -> Iterator[tuple[str, dict[str, Any], str | None]]:
    """Every schema an operation uses: parameters, request body, responses and their headers."""
    where = op_name(method, path, op)
    for param in parameters_of(op, item):
        yield from iter_schemas(param.get("schema"), f"{where} parameter {param.get('name')}")
    body, _ = resolve(op.get("requestBody", {}))
    for media, content in body.get("content", {}).items():
        yield from iter_schemas(content.get("schema"), f"{where} requestBody {media}")
    for status, response, _ in responses_of(method, path, op):
        for media, content in response.get("content", {}).items():
            yield from iter_schemas(content.get("schema"), f"{where} {status} {media}")
        for name, header in response.get("headers", {}).items():
            header, _ = resolve(header)
            yield from iter_schemas(header.get("schema"), f"{where} {status} header {name}")


def types_of(schema: dict[str, Any]) -> set[str]:
    """The schema's `type` as a set."""
    declared = schema.get("type", [])
    return {declared} if isinstance(declared, str) else set(declared)


def check_schema(location: str, schema: dict[str, Any], ref: str | None) -> list[str]:
    """Return the convention violations of one (sub)schema."""
    problems = []
    types = types_of(schema)
    if ("object" in types or "properties" in schema) and ref not in FREE_FORM_REFS:
        extra = schema.get("additionalProperties", "<missing>")
        # A map (string -> value) is allowed when bounded; any other object is closed.
        if not (extra is False or (isinstance(extra, dict) and "maxProperties" in schema)):
            problems.append(f"{location}: object needs additionalProperties: false, has {extra!r}")
    if "string" in types and "maxLength" not in schema:
        problems.append(f"{location}: string without maxLength")
    if "integer" in types:
        for keyword in ("format", "minimum", "maximum"):
            if keyword not in schema:
                problems.append(f"{location}: integer without {keyword}")
        if schema.get("format") not in (None, "int64"):
            problems.append(f"{location}: integer format must be int64, is {schema['format']!r}")
    if "number" in types:
        problems.append(f"{location}: use integer (no number fields in this API)")
    return problems


def example_validator(pointer: str) -> jsonschema.protocols.Validator:
    """A JSON Schema 2020-12 validator, formats checked, for the schema at a spec pointer."""
    registry = Registry().with_resource(
        SPEC_URI, Resource(contents=SPEC, specification=DRAFT202012)
    )
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$ref": f"{SPEC_URI}#{pointer}",
    }
    return jsonschema.Draft202012Validator(
        schema, registry=registry, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )


def media_examples(content: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    """Yield (name, value) of a media type object's examples."""
    if "example" in content:
        yield "example", content["example"]
    for name, example in content.get("examples", {}).items():
        example, _ = resolve(example)
        yield name, example.get("value")


def evaluate_body_pointer(schema: Any, pointer: str) -> dict[str, Any] | None:
    """The subschema a `$response.body#/a/b` pointer lands on, or None if it cannot exist."""
    schema, _ = resolve(schema)
    for token in pointer.strip("/").split("/"):
        props = schema.get("properties", {})
        if token not in props:
            return None
        schema, _ = resolve(props[token])
    return schema


# --- the document as a whole ---------------------------------------------------------


def test_spec_is_valid_openapi_3_1() -> None:
    assert SPEC["openapi"] == "3.1.0"
    validate(SPEC)


def test_openapi_core_loads_the_spec() -> None:
    from openapi_core import OpenAPI

    api = OpenAPI.from_file_path(str(SPEC_PATH))
    assert api.spec is not None


def test_info_servers_tags_and_security_scheme() -> None:
    assert SPEC["info"]["title"] == "Authgate API"
    assert SPEC["info"].get("version"), "info.version is missing"
    assert SPEC["info"].get("description"), "info.description is missing"
    # Relative on purpose: an absolute server URL breaks validation behind the gateway.
    assert SPEC["servers"] == [{"url": "/", "description": SPEC["servers"][0].get("description")}]
    tags = {tag["name"]: tag for tag in SPEC["tags"]}
    assert set(tags) == {"auth", "users", "sessions", "mfa", "keys", "oauth", "ops", "internal"}
    for name, tag in tags.items():
        assert tag.get("description"), f"tag {name} has no description"
    assert SPEC["components"]["securitySchemes"] == {
        "bearerAuth": {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "JWT",
            "description": SPEC["components"]["securitySchemes"]["bearerAuth"].get("description"),
        },
        "internalToken": {
            "type": "apiKey",
            "in": "header",
            "name": "X-Internal-Token",
            "description": SPEC["components"]["securitySchemes"]["internalToken"].get(
                "description"
            ),
        },
        "oauthAccessToken": {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "JWT",
            "description": SPEC["components"]["securitySchemes"]["oauthAccessToken"].get(
                "description"
            ),
        },
    }


def test_exactly_the_planned_operations() -> None:
    actual = {(method, path): op.get("operationId") for method, path, op, _ in OPERATIONS}
    expected = {key: value[0] for key, value in EXPECTED_OPERATIONS.items()}
    missing = sorted(set(expected.items()) - set(actual.items()))
    extra = sorted(set(actual.items()) - set(expected.items()))
    assert not missing and not extra, f"operations missing: {missing}; not in the plan: {extra}"


def test_operation_ids_are_unique_snake_case() -> None:
    ids = [op.get("operationId") for _, _, op, _ in OPERATIONS]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    assert not duplicates, f"duplicate operationIds: {duplicates}"
    for method, path, op, _ in OPERATIONS:
        assert re.fullmatch(r"[a-z][a-z0-9]*(_[a-z0-9]+)*", op.get("operationId") or ""), (
            f"{op_name(method, path, op)}: operationId must be snake_case (a responder name)"
        )


def test_path_templates_are_identifiers() -> None:
    for path in SPEC["paths"]:
        for field in re.findall(r"{([^}]*)}", path):
            assert field.isidentifier(), (
                f"{path}: path field {{{field}}} is not a Python identifier"
            )


def test_component_schemas_follow_conventions() -> None:
    problems = []
    for name, schema in SPEC["components"]["schemas"].items():
        for location, sub, ref in iter_schemas(schema, f"components.schemas.{name}"):
            problems += check_schema(location, sub, ref or f"#/components/schemas/{name}")
    assert not problems, "\n".join(problems)


def test_free_form_schema_is_only_the_openapi_document() -> None:
    users = [
        op_name(method, path, op)
        for method, path, op, item in OPERATIONS
        for _, _, ref in operation_schemas(method, path, op, item)
        if ref in FREE_FORM_REFS
    ]
    assert users == ["get_openapi (GET /openapi.json)"], f"free-form schema used by {users}"


def test_component_examples_are_valid() -> None:
    """Examples in components/schemas `examples` keywords match their schema."""
    problems = []
    for name, schema in SPEC["components"]["schemas"].items():
        validator = example_validator(f"/components/schemas/{escape(name)}")
        for index, value in enumerate(schema.get("examples", [])):
            problems += [
                f"components.schemas.{name}.examples[{index}]: {error.message}"
                for error in validator.iter_errors(value)
            ]
    assert not problems, "\n".join(problems)


def test_error_responses_are_problem_details() -> None:
    """Every components/responses entry for an error status is problem+json with Problem."""
    for name, response in SPEC["components"]["responses"].items():
        content = response.get("content", {})
        if "application/problem+json" in content:
            assert list(content) == ["application/problem+json"], (
                f"responses.{name}: {list(content)}"
            )
            assert content["application/problem+json"]["schema"] == {"$ref": PROBLEM_REF}, name


# --- per operation -------------------------------------------------------------------


@pytest.fixture(params=OPERATIONS, ids=OP_IDS)
def operation(request: pytest.FixtureRequest) -> Operation:
    return request.param


def test_operation_documentation(operation: Operation) -> None:
    method, path, op, _ = operation
    name = op_name(method, path, op)
    for field in ("operationId", "summary", "description"):
        assert op.get(field), f"{name}: missing {field}"
    expected = EXPECTED_OPERATIONS.get((method, path))
    assert expected is not None, f"{name}: not in the plan's API table"
    assert op.get("tags") == [expected[2]], (
        f"{name}: tags must be [{expected[2]}], are {op.get('tags')}"
    )


def test_operation_security_is_explicit(operation: Operation) -> None:
    method, path, op, _ = operation
    name = op_name(method, path, op)
    assert "security" in op, f"{name}: no explicit security (would inherit the global default)"
    wanted = EXPECTED_OPERATIONS[(method, path)][1]
    assert op["security"] == SECURITY_KINDS[wanted], (
        f"{name}: security should be {wanted}, is {op['security']}"
    )


def test_operation_schemas_follow_conventions(
    operation: Operation,
) -> None:
    problems = []
    for location, schema, ref in operation_schemas(*operation):
        problems += check_schema(location, schema, ref)
    assert not problems, "\n".join(problems)


def test_operation_statuses(operation: Operation) -> None:
    method, path, op, item = operation
    name = op_name(method, path, op)
    statuses = set(op.get("responses", {}))
    assert all(re.fullmatch(r"[1-5]\d\d", s) for s in statuses), f"{name}: odd statuses {statuses}"
    required = set(EXPECTED_STATUSES[op["operationId"]])
    if op["security"] == BEARER:
        required.add("401")
    if path.startswith("/api/v1/") or op["operationId"] == "get_jwks":
        required |= GATEWAY_STATUSES
    if "requestBody" in op:
        # NOTE: an OAuth form endpoint answers an unreadable form with the protocol's 400.
        required |= FORM_BODY_STATUSES if is_form_body(op) else BODY_STATUSES
    if parameters_of(op, item):
        required.add("422")
    missing = sorted(required - statuses)
    assert not missing, f"{name}: does not declare {missing}"
    successes = [s for s in statuses if s.startswith("2")]
    assert len(successes) == 1, f"{name}: one success status expected, has {successes}"


def test_operation_error_responses_are_problem_details(
    operation: Operation,
) -> None:
    method, path, op, _ = operation
    name = op_name(method, path, op)
    for status, response, pointer in responses_of(method, path, op):
        if status[0] not in "45":
            continue
        assert "$ref" in op["responses"][status], (
            f"{name} {status}: reuse a components/responses entry"
        )
        content = response.get("content", {})
        if op.get("tags") == ["oauth"] and is_protocol_error(content):
            continue
        assert list(content) == ["application/problem+json"], (
            f"{name} {status} ({pointer}): errors must be only application/problem+json, "
            f"are {list(content)}"
        )
        schema = content["application/problem+json"].get("schema")
        assert schema == {"$ref": PROBLEM_REF}, f"{name} {status}: schema must be {PROBLEM_REF}"


def test_operation_error_headers(operation: Operation) -> None:
    method, path, op, _ = operation
    name = op_name(method, path, op)
    required_headers = {"401": "WWW-Authenticate", "429": "Retry-After"}
    for status, response, _ in responses_of(method, path, op):
        # NOTE: the OAuth pages' 401 and 429 are the sign-in form again (the pages
        # contract), not an HTTP authentication challenge or a retry hint.
        if list(response.get("content", {})) == ["text/html"]:
            continue
        if status in required_headers:
            header = response.get("headers", {}).get(required_headers[status])
            assert header is not None, f"{name} {status}: no {required_headers[status]} header"
            assert resolve(header)[0].get("required") is True, (
                f"{name} {status}: {required_headers[status]} must be required"
            )


def test_operation_request_body(operation: Operation) -> None:
    method, path, op, _ = operation
    name = op_name(method, path, op)
    bodyless = method == "get" or (method == "delete" and op["operationId"] not in BODY_DELETES)
    if bodyless or op["operationId"] in BODYLESS_POSTS:
        assert "requestBody" not in op, f"{name}: {method.upper()} must not take a body"
        return
    body, _ = resolve(op.get("requestBody"))
    assert body, f"{name}: {method.upper()} without a requestBody"
    assert body.get("required") is True, f"{name}: requestBody must be required: true"
    media_type = FORM if op.get("tags") == ["oauth"] else "application/json"
    assert list(body.get("content", {})) == [media_type], f"{name}: body must be {media_type}"
    content = body["content"][media_type]
    assert "$ref" in content.get("schema", {}), f"{name}: body schema should be a named component"
    assert content.get("examples"), f"{name}: request body has no examples"


def request_strings(node: Any, where: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every string schema a client can send in `node`, with where it is."""
    node, _ = resolve(node, where)
    types = node.get("type", [])
    if "string" in ([types] if isinstance(types, str) else types):
        yield where, node
    for name, child in node.get("properties", {}).items():
        yield from request_strings(child, f"{where}.{name}")
    if isinstance(node.get("items"), dict):
        yield from request_strings(node["items"], f"{where}[]")


def test_request_strings_refuse_nul(operation: Operation) -> None:
    """The spec states the service's NUL rule: every request string's pattern refuses it.

    auth_service/validation.py relies on this (it checks only unpaired surrogates
    itself); a string field added without the pattern would send NUL to PostgreSQL.
    """
    method, path, op, item = operation
    name = op_name(method, path, op)
    roots = [(p["name"], p["schema"]) for p in parameters_of(op, item)]
    if "requestBody" in op:
        body, _ = resolve(op["requestBody"])
        roots.extend(("body", content["schema"]) for content in body["content"].values())
    for root, schema in roots:
        for where, string in request_strings(schema, root):
            if "enum" in string or "const" in string:
                continue
            pattern = string.get("pattern")
            assert pattern is not None, f"{name} {where}: no pattern refusing NUL"
            assert not re.search(pattern, "te\x00xt"), f"{name} {where}: {pattern!r} allows NUL"


def test_operation_examples_are_valid(operation: Operation) -> None:
    method, path, op, item = operation
    name = op_name(method, path, op)
    op_pointer = pointer_of(method, path)
    media: list[tuple[str, dict[str, Any], str]] = []
    if "requestBody" in op:
        body, pointer = resolve(op["requestBody"], f"{op_pointer}/requestBody")
        for media_type, content in body["content"].items():
            media.append(
                (f"requestBody {media_type}", content, f"{pointer}/content/{escape(media_type)}")
            )
    for status, response, pointer in responses_of(method, path, op):
        for media_type, content in response.get("content", {}).items():
            media.append(
                (f"{status} {media_type}", content, f"{pointer}/content/{escape(media_type)}")
            )
    problems = []
    for label, content, pointer in media:
        examples = list(media_examples(content))
        if not examples:
            problems.append(f"{name} {label}: no examples")
        validator = example_validator(f"{pointer}/schema")
        for example_name, value in examples:
            problems += [
                f"{name} {label} example {example_name}: {error.message}"
                for error in validator.iter_errors(value)
            ]
    for param in parameters_of(op, item):
        if "example" in param:
            schema_validator = jsonschema.Draft202012Validator(
                param["schema"], format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
            )
            problems += [
                f"{name} parameter {param['name']} example: {error.message}"
                for error in schema_validator.iter_errors(param["example"])
            ]
    assert not problems, "\n".join(problems)


def test_operation_parameters(operation: Operation) -> None:
    method, path, op, item = operation
    name = op_name(method, path, op)
    params = parameters_of(op, item)
    declared_path_fields = {p["name"] for p in params if p["in"] == "path"}
    assert declared_path_fields == set(re.findall(r"{([^}]*)}", path)), (
        f"{name}: path parameters {declared_path_fields} do not match the template"
    )
    for param in params:
        schema = param.get("schema", {})
        assert "example" in param, f"{name}: parameter {param['name']} has no example"
        if param["name"] == "user_id":
            assert schema.get("format") == "uuid" and schema.get("maxLength") == 36, (
                f"{name}: user_id must be a uuid string with maxLength 36"
            )
        if "default" in schema:
            assert (
                schema.get("minimum", float("-inf"))
                <= schema["default"]
                <= schema.get("maximum", float("inf"))
            ), f"{name} parameter {param['name']}: default outside its bounds"


def test_operation_links(operation: Operation) -> None:
    method, path, op, _ = operation
    name = op_name(method, path, op)
    by_id = {o["operationId"]: (m, p, o, i) for m, p, o, i in OPERATIONS}
    for status, response, _ in responses_of(method, path, op):
        body_schema = response.get("content", {}).get("application/json", {}).get("schema")
        for link_name, link in response.get("links", {}).items():
            where = f"{name} {status} link {link_name}"
            assert link.get("operationId") in by_id, f"{where}: unknown operationId"
            _, _, target, t_item = by_id[link["operationId"]]
            target_params = {p["name"] for p in parameters_of(target, t_item)}
            expressions = dict(link.get("parameters", {}))
            for param in expressions:
                assert param in target_params, (
                    f"{where}: {link['operationId']} has no parameter {param}"
                )
            if "requestBody" in link:
                assert "requestBody" in target, f"{where}: {link['operationId']} takes no body"
                body = link["requestBody"]
                target_body = resolve(target["requestBody"])[0]["content"]["application/json"][
                    "schema"
                ]
                assert isinstance(body, dict), (
                    f"{where}: requestBody should map fields to expressions"
                )
                for field, expression in body.items():
                    assert evaluate_body_pointer(target_body, field) is not None, (
                        f"{where}: {link['operationId']} body has no field {field}"
                    )
                    expressions[f"body.{field}"] = expression
            for param, expression in expressions.items():
                match = re.fullmatch(r"\$response\.body#(/.*)", expression)
                assert match, (
                    f"{where}: {param} = {expression!r} is not a $response.body expression"
                )
                assert body_schema is not None, f"{where}: the response has no JSON body"
                assert evaluate_body_pointer(body_schema, match.group(1)) is not None, (
                    f"{where}: the {status} body has no {match.group(1)}"
                )


def test_links_cover_stateful_flows() -> None:
    """The flows stateful contract tests and SDK users follow."""
    expected = {
        ("register", "201"): {"get_user"},
        ("login", "200"): {"refresh", "logout"},
        ("refresh", "200"): {"refresh", "logout"},
        ("create_user", "201"): {"get_user", "update_user", "delete_user"},
    }
    by_id = {op["operationId"]: op for _, _, op, _ in OPERATIONS}
    for (source, status), targets in expected.items():
        response, _ = resolve(by_id[source]["responses"][status])
        linked = {link["operationId"] for link in response.get("links", {}).values()}
        assert targets <= linked, (
            f"{source} {status}: links to {sorted(linked)}, expected {sorted(targets)}"
        )


def test_token_responses_forbid_caching() -> None:
    for operation_id in ("login", "refresh", "login_mfa", "start_totp_enrolment"):
        op = next(o for _, _, o, _ in OPERATIONS if o["operationId"] == operation_id)
        response, _ = resolve(op["responses"]["200"])
        header, _ = resolve(response.get("headers", {}).get("Cache-Control", {}))
        assert header.get("required") is True, f"{operation_id} 200: Cache-Control must be required"
        assert "no-store" in header.get("schema", {}).get("pattern", ""), (
            f"{operation_id} 200: Cache-Control must be pinned to no-store"
        )
        assert "Pragma" in response.get("headers", {}), f"{operation_id} 200: no Pragma header"


# --- the examples, through the validator the service runs ---------------------------


@pytest.fixture(scope="module")
def openapi_core_spec() -> Any:
    from openapi_core import Config, OpenAPI

    # problem+json is JSON to us but not to openapi-core (docs/architecture.md, "Decisions
    # and why").
    config = Config(
        extra_media_type_deserializers={"application/problem+json": json.loads},
        additional_properties_default_policy="forbid",
    )
    return OpenAPI.from_file_path(str(SPEC_PATH), config=config)


def example_request(method: str, path: str, op: dict[str, Any], item: dict[str, Any]) -> Any:
    """A request built from the operation's examples (parameters and first body example)."""
    from openapi_core.testing import MockRequest

    url_path = path
    args = {}
    for param in parameters_of(op, item):
        if param["in"] == "path":
            url_path = url_path.replace(f"{{{param['name']}}}", str(param["example"]))
        elif param["in"] == "query":
            args[param["name"]] = str(param["example"])
    bearer = op["security"] in (BEARER, OAUTH_BEARER)
    headers = {"Authorization": "Bearer example"} if bearer else {}
    if op["security"] == INTERNAL:
        headers = {"X-Internal-Token": "example"}
    data, content_type = None, None
    if "requestBody" in op:
        ((content_type, content),) = resolve(op["requestBody"])[0]["content"].items()
        example = next(media_examples(content))[1]
        if content_type == FORM:
            data = urllib.parse.urlencode(example).encode()
        else:
            data = json.dumps(example).encode()
    return MockRequest(
        "http://gateway.example",
        method,
        url_path,
        args=args,
        headers=headers,
        data=data,
        content_type=content_type,
    )


def test_operation_examples_pass_openapi_core(operation: Operation, openapi_core_spec: Any) -> None:
    """Example requests and responses, with example headers, validate in openapi-core."""
    from openapi_core.exceptions import OpenAPIError
    from openapi_core.testing import MockResponse

    method, path, op, item = operation
    name = op_name(method, path, op)
    request = example_request(method, path, op, item)
    try:
        openapi_core_spec.validate_request(request)
    except OpenAPIError as ex:
        pytest.fail(f"{name}: example request rejected by openapi-core: {ex!r}")
    for status, response, _ in responses_of(method, path, op):
        headers = {
            header_name: str(resolve(header)[0]["example"])
            for header_name, header in response.get("headers", {}).items()
        }
        bodies = [(None, b"")]
        if response.get("content"):
            bodies = [
                (media_type, value if isinstance(value, str) else json.dumps(value))
                for media_type, content in response["content"].items()
                for _, value in media_examples(content)
            ]
        for media_type, body in bodies:
            mock = MockResponse(
                body.encode() if isinstance(body, str) else body,
                status_code=int(status),
                headers=headers,
                content_type=media_type,
            )
            try:
                openapi_core_spec.validate_response(request, mock)
            except OpenAPIError as ex:
                pytest.fail(
                    f"{name} {status} {media_type}: example rejected by openapi-core: {ex!r}"
                )


SPECTRAL = SPEC_PATH.parents[1] / ".tools" / "lint" / "node_modules" / ".bin" / "spectral"


def test_spectral_style_lint_is_clean() -> None:
    """The style lint (`make lint`) with the repo's rule set finds nothing, warnings included."""
    if not SPECTRAL.exists():
        message = "Spectral is not installed: run `make lint-tools`"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true and {message}", pytrace=False)
        pytest.skip(message)
    result = subprocess.run(
        [
            str(SPECTRAL),
            "lint",
            str(SPEC_PATH),
            "--ruleset",
            str(SPEC_PATH.parents[1] / ".spectral.yaml"),
            "--fail-severity=warn",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# --- problem types: the registry and the spec list the same ones ------------------------

PROBLEM_TYPE_SCHEMA = SPEC["components"]["schemas"]["ProblemType"]
PROBLEM_TYPE_ROW = re.compile(r"^\| `([a-z-]+)` \| (\d{3}|4xx/5xx) \|", re.MULTILINE)
REPO_ROOT = SPEC_PATH.parents[1]


def test_spec_lists_exactly_the_problem_types_the_code_can_send() -> None:
    # The services send only ProblemType members (their problem writers take nothing else).
    listed = PROBLEM_TYPE_SCHEMA["enum"]
    assert len(listed) == len(set(listed))
    assert set(listed) == {member.uri for member in ProblemType}


def test_spec_gives_each_problem_type_its_status() -> None:
    table = dict(PROBLEM_TYPE_ROW.findall(PROBLEM_TYPE_SCHEMA["description"]))
    expected = {
        member.slug: str(member.status) if member.status is not None else "4xx/5xx"
        for member in ProblemType
    }
    assert table == expected


def problem_examples(node: Any) -> Iterator[dict[str, Any]]:
    """Every example value in the spec that is a problem document."""
    if isinstance(node, dict):
        if isinstance(node.get("type"), str) and node["type"].startswith(PROBLEM_TYPE_BASE):
            yield node
        for value in node.values():
            yield from problem_examples(value)
    elif isinstance(node, list):
        for value in node:
            yield from problem_examples(value)


def test_problem_examples_use_registered_types_with_their_status_and_title() -> None:
    examples = list(problem_examples(SPEC["paths"])) + list(
        problem_examples(SPEC["components"]["responses"])
    )
    assert examples
    for example in examples:
        problem = ProblemType(example["type"].removeprefix(PROBLEM_TYPE_BASE))
        if problem.status is not None:
            assert example["status"] == problem.status, example
        assert example["title"] == problem.problem_title, example


def test_problem_type_uris_are_built_only_by_the_registry() -> None:
    # A hand-written URI in a service would be a type the registry (and the spec) may lack.
    registry = REPO_ROOT / "authgate_common" / "problem_types.py"
    sources = [
        path
        for package in ("auth_service", "gateway_service", "authgate_common", "deploy")
        for path in (REPO_ROOT / package).rglob("*.py")
    ]
    assert registry in sources
    offenders = [
        str(path.relative_to(REPO_ROOT))
        for path in sources
        if path != registry and "authgate.dev/problems" in path.read_text(encoding="utf-8")
    ]
    assert offenders == []
