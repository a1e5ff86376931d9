#!/usr/bin/env bash
# Air-gapped build: the images docker-compose.yml needs, made from Debian and PyPI packages
# alone (no image registry). A minimal Debian root made with debootstrap becomes the base
# image; Python, PostgreSQL and Redis images are built on it and honour the same environment
# variables and health checks as the official images the compose file names by default.
#
#   deploy/offline/build.sh >> .env     # builds the four images; the three image names
#                                        # it prints go to .env, where compose reads them
#   deploy/offline/build.sh --print-env  # just the names
#
# Needs root (debootstrap), a Docker engine, and a Debian mirror. The debootstrap result is
# cached as a tarball under var/offline/ (git-ignored), so only the first build pays for it.
set -euo pipefail
cd "$(dirname "$0")/../.."

SUITE=${DEBIAN_SUITE:-bookworm}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
SECURITY_MIRROR=${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
CACHE_DIR=${OFFLINE_CACHE_DIR:-var/offline}
# CA bundle the builds trust (a private mirror or a TLS-inspecting proxy has its own CA).
CA_BUNDLE=${OFFLINE_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
PREFIX=${OFFLINE_IMAGE_PREFIX:-authgate-offline}

BASE_IMAGE="$PREFIX/debian:$SUITE"
PYTHON_IMAGE="$PREFIX/python:3-$SUITE"
POSTGRES_IMAGE="$PREFIX/postgres:$SUITE"
REDIS_IMAGE="$PREFIX/redis:$SUITE"

# Lines for .env (compose reads them from there) that are also valid shell for eval.
print_env() {
  printf 'PYTHON_IMAGE=%s\nPOSTGRES_IMAGE=%s\nREDIS_IMAGE=%s\n' \
    "$PYTHON_IMAGE" "$POSTGRES_IMAGE" "$REDIS_IMAGE"
}
if [[ "${1:-}" == "--print-env" ]]; then
  print_env
  exit 0
fi

log() { echo "==> $*" >&2; }

build_base() {
  if docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
    log "$BASE_IMAGE exists"
    return
  fi
  local tarball="$CACHE_DIR/debian-$SUITE-minbase.tar"
  if [[ ! -s "$tarball" ]]; then
    log "debootstrap $SUITE from $MIRROR (first run only: a few minutes)"
    mkdir -p "$CACHE_DIR"
    local root
    root=$(mktemp -d "$CACHE_DIR/rootfs.XXXXXX")
    # NOTE: the trap removes a half-made root so a failed run never leaves a bad cache.
    trap 'rm -rf "$root"' RETURN
    debootstrap --variant=minbase "$SUITE" "$root" "$MIRROR" >&2
    cat >"$root/etc/apt/sources.list" <<SOURCES
deb $MIRROR $SUITE main
deb $MIRROR $SUITE-updates main
deb $SECURITY_MIRROR $SUITE-security main
SOURCES
    # PERF: images never need apt's downloaded .debs or lists; the official slim images do the same.
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
    tar -C "$root" -cf "$tarball.partial" .
    mv "$tarball.partial" "$tarball"
  fi
  log "importing $tarball as $BASE_IMAGE"
  docker import "$tarball" "$BASE_IMAGE" >/dev/null
}

# One image from deploy/offline/<name>.Dockerfile on the base; the context holds only the
# Dockerfiles, the entrypoint and the CA bundle (copied here at build time, never committed).
build_on_base() {
  local name=$1 tag=$2 context="$CACHE_DIR/context"
  rm -rf "$context"
  mkdir -p "$context"
  cp deploy/offline/*.Dockerfile deploy/offline/*.sh "$context/"
  cp "$CA_BUNDLE" "$context/build-ca.crt"
  log "building $tag"
  # NOTE: the classic builder: BuildKit's Dockerfile frontend is itself an image to pull.
  DOCKER_BUILDKIT=0 docker build --quiet --build-arg "BASE_IMAGE=$BASE_IMAGE" \
    -f "$context/$name.Dockerfile" -t "$tag" "$context" >/dev/null
}

build_base
build_on_base python "$PYTHON_IMAGE"
build_on_base postgres "$POSTGRES_IMAGE"
build_on_base redis "$REDIS_IMAGE"
log "done; the image names for .env:"
print_env
