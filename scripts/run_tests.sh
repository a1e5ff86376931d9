#!/usr/bin/env bash
# Runs the whole test suite. Outside CI, tests needing a server that is not running are
# skipped and listed loudly at the end; with CI=true those skips fail the run.
set -uo pipefail
cd "$(dirname "$0")/.."

echo "==> Running the tests (PostgreSQL: ${TEST_POSTGRES_URL:-postgresql+psycopg2://postgres@127.0.0.1:5432/postgres}, Redis: ${TEST_REDIS_URL:-redis://127.0.0.1:6379/0})"
.venv/bin/pytest "$@"
status=$?
if [ "$status" -eq 5 ]; then
  echo "error: pytest collected no tests" >&2
  exit 1
fi
exit "$status"
