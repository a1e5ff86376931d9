#!/usr/bin/env bash
# Runs the whole test suite. Outside CI, tests needing a server that is not running are
# skipped and listed loudly at the end; with CI=true those skips fail the run.
#
# tests/ and contract_tests/ run as two pytest sessions: each starts its own servers on
# its own session-scoped database, and the contract suite's stateful walk must not start
# from state the rest of the suite left behind. With arguments, one session runs them.
set -uo pipefail
cd "$(dirname "$0")/.."

echo "==> Running the tests (PostgreSQL: ${TEST_POSTGRES_URL:-postgresql+psycopg2://postgres@127.0.0.1:5432/postgres}, Redis: ${TEST_REDIS_URL:-redis://127.0.0.1:6379/0})"

run() {
  .venv/bin/pytest "$@"
  local status=$?
  if [ "$status" -eq 5 ]; then
    echo "error: pytest collected no tests" >&2
    return 1
  fi
  return "$status"
}

if [ "$#" -gt 0 ]; then
  run "$@"
  exit $?
fi

run tests
unit=$?
echo "==> Contract tests (Schemathesis against both live services)"
run contract_tests
contract=$?
if [ "$unit" -ne 0 ] || [ "$contract" -ne 0 ]; then
  echo "error: tests/ exited $unit, contract_tests/ exited $contract" >&2
  exit 1
fi
