#!/usr/bin/env bash
# Runs both services locally without Docker, on the embedded defaults unless .env says
# otherwise: SQLite under var/, in-memory rate limits, a dev signing key under var/keys.
# Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
AUTH_PORT=${AUTH_PORT:-8001}
GATEWAY_PORT=${GATEWAY_PORT:-8000}
export AUTH_SERVICE_URL=${AUTH_SERVICE_URL:-http://127.0.0.1:$AUTH_PORT}
export LOG_FORMAT=${LOG_FORMAT:-console}

echo "==> Migrating the database"
$BIN/python -m auth_service.cli migrate

pids=()
cleanup() {
  echo "==> Stopping"
  kill "${pids[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 0' INT TERM  # Ctrl-C is the normal way to stop: clean up once and exit 0

wait_for() {
  for _ in $(seq 1 100); do
    if $BIN/python -c "import urllib.request,sys; urllib.request.urlopen(sys.argv[1], timeout=1)" "$1" 2>/dev/null; then
      return 0
    fi
    sleep 0.2
  done
  echo "error: $1 did not answer; see the log above" >&2
  return 1
}

echo "==> Starting the auth service on 127.0.0.1:$AUTH_PORT"
# The gateway, on this host, is the auth service's only client: the auth service believes
# its X-Forwarded-For, so login throttles count per real client address, not all as one.
TRUSTED_PROXIES=127.0.0.1/32 $BIN/gunicorn -c deploy/gunicorn_auth.conf.py &
pids+=($!)
wait_for "http://127.0.0.1:$AUTH_PORT/healthz"

echo "==> Starting the gateway on 127.0.0.1:$GATEWAY_PORT"
$BIN/gunicorn -c deploy/gunicorn_gateway.conf.py &
pids+=($!)
wait_for "http://127.0.0.1:$GATEWAY_PORT/healthz"
public="http://127.0.0.1:$GATEWAY_PORT"

cat <<MSG

  authgate is running.
    API (through the gateway): $public/api/v1/...
    Interactive docs:          $public/docs
    Auth service (internal):   http://127.0.0.1:$AUTH_PORT/docs
  Create an admin in another terminal:  make create-admin
  Press Ctrl-C to stop.

MSG
wait -n "${pids[@]}"
