"""The server-rendered sign-in, MFA, consent and error pages of GET/POST /oauth/authorize.

NOTE: string.Template over small files in this package, every value through
html.escape: four fixed pages do not need a template engine (and its dependency); the
element ids and names are the pages contract the browser tests rely on (README,
"OAuth 2.0 and OpenID Connect").
"""

from __future__ import annotations

import html
from functools import cache
from importlib import resources
from string import Template

import falcon

# SECURITY: no script, no framing (clickjacking of the consent page), no referrer (the
# authorize URL carries state). NOTE: no form-action: browsers apply it to the redirect
# the consent form's POST answers with, and that goes to the client's redirect URI.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; style-src 'self'; img-src 'self'; base-uri 'none'; frame-ancestors 'none'"
)

SCOPE_DESCRIPTIONS = {
    "openid": "Sign you in with your Authgate account",
    "profile": "See your name",
    "email": "See your email address",
    "offline_access": "Stay signed in when you are away",
}


@cache
def _template(name: str) -> Template:
    text = resources.files("auth_service.oauth").joinpath("templates", name).read_text("utf-8")
    return Template(text)


def _fill(name: str, **values: str) -> str:
    """The template with every value HTML-escaped (attributes and text alike)."""
    return _template(name).substitute({key: html.escape(value) for key, value in values.items()})


def _page(title: str, content: str, error: str | None) -> str:
    message = _fill("error_message.html", message=error) if error else ""
    # NOTE: `content` and `message` are already escaped pages parts; only title is text.
    return _template("layout.html").substitute(
        title=html.escape(title), error=message, content=content
    )


def sign_in(client_name: str, csrf_token: str, *, email: str = "", error: str | None = None) -> str:
    """The email and password form."""
    content = _fill("sign_in.html", client_name=client_name, csrf_token=csrf_token, email=email)
    return _page("Sign in", content, error)


def mfa(csrf_token: str, mfa_token: str, *, error: str | None = None) -> str:
    """The second-factor form (TOTP or recovery code)."""
    content = _fill("mfa.html", csrf_token=csrf_token, mfa_token=mfa_token)
    return _page("Two-step verification", content, error)


def consent(client_name: str, csrf_token: str, scopes: list[str]) -> str:
    """The scopes the client asks for, with approve and deny."""
    items = "\n".join(
        _fill("scope.html", scope=scope, description=SCOPE_DESCRIPTIONS.get(scope, scope))
        for scope in scopes
    )
    content = _template("consent.html").substitute(
        client_name=html.escape(client_name), csrf_token=html.escape(csrf_token), scopes=items
    )
    return _page("Allow access", content, None)


def error(message: str) -> str:
    """A request we cannot send back to the client (unknown client, bad redirect URI...)."""
    return _page("Sign-in failed", _fill("error.html"), message)


def render(resp: falcon.Response, status: int, body: str) -> None:
    """Send a page with the headers every page has."""
    resp.status = status
    resp.content_type = "text/html; charset=utf-8"
    resp.text = body
    resp.set_header("Cache-Control", "no-store")
    resp.set_header("Pragma", "no-cache")
    resp.set_header("Content-Security-Policy", CONTENT_SECURITY_POLICY)
    resp.set_header("X-Frame-Options", "DENY")
    resp.set_header("Referrer-Policy", "no-referrer")
    resp.set_header("X-Content-Type-Options", "nosniff")
