"""The OAuth 2.0 / OpenID Connect provider: Authlib's server components adapted to Falcon."""
