"""Security primitives: password hashing and access-token signing (no web framework imports)."""
