"""Fixtures for the OAuth provider tests: the auth service's own (tests/auth/conftest.py)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

_AUTH_TESTS = Path(__file__).resolve().parent.parent / "auth"
_GATEWAY_TESTS = _AUTH_TESTS.parent / "gateway"
# NOTE: the helpers of tests/auth (auth_api, smtp_inbox) and tests/gateway
# (gateway_support) import each other by module name.
sys.path.insert(0, str(_GATEWAY_TESTS))
sys.path.insert(0, str(_AUTH_TESTS))
_spec = importlib.util.spec_from_file_location("auth_conftest", _AUTH_TESTS / "conftest.py")
assert _spec is not None and _spec.loader is not None
_auth = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_auth)

contract = _auth.contract
var_dir = _auth.var_dir
sqlite_database = _auth.sqlite_database
migrated_postgres = _auth.migrated_postgres
database_url = _auth.database_url
settings = _auth.settings
make_client = _auth.make_client
client = _auth.client
api = _auth.api
