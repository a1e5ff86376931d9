# One image for both services. The default command runs the auth service; the gateway
# runs the same image with `gunicorn -c deploy/gunicorn_gateway.conf.py` and SERVICE=gateway
# (see docker-compose.yml). SERVICE only tells the HEALTHCHECK which port to probe.

# Both stages use the same base so the venv's interpreter symlinks resolve in the final one.
# Any Debian-based Python 3.11+ image works: a mirror's copy, or deploy/offline/'s stand-in.
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS builder
# Compilers live only here: every dependency has wheels for amd64/arm64 today, but an
# sdist-only release (or a new arch) must not break the build.
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential libpq-dev \
    && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
WORKDIR /src
# Dependencies come from pyproject.toml alone, in their own layer, so editing app code
# does not reinstall them. The app itself is not pip-installed: openapi/, migrations/ and
# alembic.ini are read from /app beside the packages, so /app is the single copy of the code.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > requirements.txt \
    && pip install -r requirements.txt

FROM ${PYTHON_IMAGE} AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app \
    SERVICE=auth \
    AUTH_PORT=8001 \
    GATEWAY_PORT=8000
# SECURITY: a fixed, unprivileged uid (10001: above any host system range) so volume
# ownership is predictable and the process can never write the code it runs.
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --home-dir /app --shell /usr/sbin/nologin app
WORKDIR /app
COPY --from=builder /opt/venv /opt/venv
# Code stays root-owned and read-only to the app user.
COPY auth_service ./auth_service
COPY gateway_service ./gateway_service
COPY authgate_common ./authgate_common
COPY openapi ./openapi
COPY migrations ./migrations
COPY alembic.ini ./alembic.ini
COPY deploy ./deploy
# var/ holds the generated dev signing key (var/keys/), the internal API token
# (var/internal/) and the SQLite default; it is the only writable path. A named volume mounted here inherits this ownership.
RUN mkdir -p /app/var/keys /app/var/internal && chown -R app:app /app/var
USER app:app
EXPOSE 8000 8001
# Liveness only (/healthz); urllib raises on a refused connection or a non-2xx status,
# so the probe exits non-zero. Python is used because slim images carry no curl.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; port = os.environ['GATEWAY_PORT' if os.environ.get('SERVICE') == 'gateway' else 'AUTH_PORT']; urllib.request.urlopen(f'http://127.0.0.1:{port}/healthz', timeout=2)"]
# gunicorn is PID 1: SIGTERM (docker stop) is its graceful shutdown.
CMD ["gunicorn", "-c", "deploy/gunicorn_auth.conf.py"]
