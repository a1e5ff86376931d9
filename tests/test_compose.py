"""Deployment files agree with each other and with the code: compose, Dockerfile, gunicorn, env.

Static checks, fast and engine-free: they parse the files the engine would read and
cross-check them against the gunicorn configs, the settings modules and .env.example. The
gunicorn configs are also booted for real, with a probe WSGI app, to prove what they
trust. tests/test_compose_stack.py runs the stack itself on a Docker engine.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml
from gunicorn.config import Config
from gunicorn.workers.gthread import ThreadWorker
from process_support import free_port

from authgate_common.env import EnvError

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
ENV_EXAMPLE = ROOT / ".env.example"
GUNICORN_CONFS = {
    "auth": ROOT / "deploy" / "gunicorn_auth.conf.py",
    "gateway": ROOT / "deploy" / "gunicorn_gateway.conf.py",
}
GUNICORN_COMMON = ROOT / "deploy" / "gunicorn_common.py"
SETTINGS_MODULES = [ROOT / "auth_service" / "settings.py", ROOT / "gateway_service" / "settings.py"]

# Operators and deploy scripts rely on these exact names (README, .env.example).
OPERATOR_ENV_NAMES = {
    "DATABASE_URL", "REDIS_URL", "AUTH_PORT", "GATEWAY_PORT", "AUTH_SERVICE_URL",
    "JWT_ALGORITHM", "JWT_PRIVATE_KEY_FILE", "JWT_SECRET", "JWT_ISSUER", "JWT_AUDIENCE",
    "ACCESS_TOKEN_EXPIRE_MINUTES", "REFRESH_TOKEN_EXPIRE_DAYS", "REFRESH_REUSE_GRACE_SECONDS",
    "RESPONSE_VALIDATION", "BCRYPT_ROUNDS", "ALLOW_REGISTRATION", "FIRST_SUPERUSER_EMAIL",
    "FIRST_SUPERUSER_PASSWORD", "SMTP_HOST", "SMTP_PORT", "SMTP_FROM", "PASSWORD_RESET_URL",
    "RATE_LIMIT_DEFAULT", "RATE_LIMIT_AUTH", "LOGIN_MAX_FAILURES", "LOGIN_LOCKOUT_SECONDS",
    "CORS_ORIGINS", "TRUSTED_PROXIES",
    # Agreed additions (team plan for the ops files).
    "JWT_PREVIOUS_PUBLIC_KEY_FILES", "PASSWORD_RESET_TOKEN_EXPIRE_MINUTES", "SMTP_USERNAME",
    "SMTP_PASSWORD", "SMTP_STARTTLS", "LOG_FORMAT", "PROMETHEUS_MULTIPROC_DIR",
    "WEB_CONCURRENCY", "OTEL_EXPORTER_OTLP_ENDPOINT", "GATEWAY_CONNECT_TIMEOUT",
    "GATEWAY_READ_TIMEOUT", "GATEWAY_MAX_BODY_BYTES", "GATEWAY_ROUTES",
}  # fmt: skip

# Everything the app needs at run time; the image must carry each of these.
APP_PATHS = [
    "auth_service", "gateway_service", "authgate_common",
    "openapi", "migrations", "alembic.ini", "deploy",
]  # fmt: skip

# Variables that change what the gunicorn configs (and gunicorn itself) compute.
GUNICORN_ENV = [
    "AUTH_HOST", "AUTH_PORT", "AUTH_THREADS", "GATEWAY_HOST", "GATEWAY_PORT", "GATEWAY_THREADS",
    "WEB_CONCURRENCY", "TRUSTED_PROXIES", "PROMETHEUS_MULTIPROC_DIR", "FORWARDED_ALLOW_IPS",
    "GUNICORN_LOG_LEVEL",
]  # fmt: skip


def require_file(path: Path, owner: str) -> None:
    """Skip while a teammate's file is not written yet; in CI a missing file fails."""
    if path.exists():
        return
    message = f"{path.relative_to(ROOT)} does not exist yet ({owner}); check not run"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


# --------------------------------------------------------------------------- loaders


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def env_example_lines() -> dict[str, str | None]:
    """Map each name in .env.example to its active value, or None when commented out."""
    names: dict[str, str | None] = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        active = re.match(r"^([A-Z][A-Z0-9_]*)=(.*)$", line)
        if active:
            assert active.group(1) not in names or names[active.group(1)] is None, (
                f".env.example sets {active.group(1)} twice"
            )
            names[active.group(1)] = active.group(2)
            continue
        commented = re.match(r"^#\s?([A-Z][A-Z0-9_]*)=", line)
        if commented:
            names.setdefault(commented.group(1), None)
    return names


@pytest.fixture(scope="module")
def env_example() -> dict[str, str | None]:
    return env_example_lines()


def one_shot(services: dict[str, dict[str, Any]]) -> set[str]:
    """Services others wait on to *finish* (migrations), rather than to be healthy."""
    return {
        name
        for service in services.values()
        for name, dep in _depends_on(service).items()
        if dep.get("condition") == "service_completed_successfully"
    }


def _depends_on(service: dict[str, Any]) -> dict[str, dict[str, Any]]:
    deps = service.get("depends_on", {})
    if isinstance(deps, list):  # short syntax: no condition at all
        return {name: {} for name in deps}
    return deps


def _environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        return dict(item.split("=", 1) for item in env)
    return {key: str(value) for key, value in env.items()}


def dockerfile_stages() -> list[list[str]]:
    """The Dockerfile's logical lines (continuations joined), split per FROM stage."""
    logical: list[str] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    stages: list[list[str]] = []
    for line in logical:
        if line.upper().startswith("FROM "):
            stages.append([])
        if stages:
            stages[-1].append(line)
    return stages


def instructions(stage: list[str], keyword: str) -> list[str]:
    """Arguments of every `keyword` instruction of a stage."""
    return [line.split(None, 1)[1] for line in stage if line.split()[0].upper() == keyword]


def load_gunicorn_conf(
    path: Path, monkeypatch: pytest.MonkeyPatch, **env: str
) -> tuple[Config, dict[str, Any]]:
    """Exec a config file as gunicorn does and apply it through gunicorn's validators."""
    for name in GUNICORN_ENV:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    namespace: dict[str, Any] = {"__file__": str(path), "__name__": "__config__"}
    exec(compile(path.read_text(), str(path), "exec"), namespace)  # noqa: S102 - our own file
    cfg = Config()
    for key, value in namespace.items():
        if key in cfg.settings:
            cfg.set(key, value)
    return cfg, namespace


# --------------------------------------------------------------------------- compose


def test_compose_has_the_services(services: dict[str, dict[str, Any]]) -> None:
    missing = {"postgres", "redis", "auth", "gateway", "migrate"} - set(services)
    assert not missing, f"docker-compose.yml lacks services {sorted(missing)}"


def test_every_long_running_service_has_a_healthcheck(
    services: dict[str, dict[str, Any]],
) -> None:
    for name, service in services.items():
        if name in one_shot(services):
            assert service.get("restart") in ("no", None), (
                f"one-shot service {name} must not restart (it would rerun forever)"
            )
            continue
        check = service.get("healthcheck") or {}
        assert check.get("test") and not check.get("disable"), f"service {name} has no healthcheck"


def test_only_the_gateway_publishes_a_port(services: dict[str, dict[str, Any]]) -> None:
    published = sorted(name for name, service in services.items() if service.get("ports"))
    assert published == ["gateway"], f"services publishing ports: {published}, want only gateway"


def test_gateway_port_mapping_matches_gunicorn(
    services: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    gateway = services["gateway"]
    env = _environment(gateway)
    (mapping,) = gateway["ports"]
    container_port = str(mapping).rsplit(":", 1)[-1].split("/")[0]
    cfg, _ = load_gunicorn_conf(GUNICORN_CONFS["gateway"], monkeypatch)
    default_port = cfg.bind[0].rsplit(":", 1)[-1]
    assert container_port == default_port, (
        f"gateway publishes container port {container_port}, gunicorn binds {default_port}"
    )
    # .env's GATEWAY_PORT picks the host port; inside, compose must pin the container port.
    assert env.get("GATEWAY_PORT") == container_port, (
        f"gateway's environment GATEWAY_PORT={env.get('GATEWAY_PORT')} must pin {container_port}"
    )
    assert env.get("GATEWAY_HOST") == "0.0.0.0", "gateway must bind 0.0.0.0 in its container"  # noqa: S104
    assert f":{container_port}/healthz" in json.dumps(gateway["healthcheck"]["test"]), (
        "gateway healthcheck does not probe its own port's /healthz"
    )


def test_auth_is_internal_and_where_the_gateway_looks(
    services: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    auth = services["auth"]
    env = _environment(auth)
    cfg, _ = load_gunicorn_conf(GUNICORN_CONFS["auth"], monkeypatch)
    port = cfg.bind[0].rsplit(":", 1)[-1]
    assert env.get("AUTH_PORT") == port, f"auth's AUTH_PORT={env.get('AUTH_PORT')}, want {port}"
    assert env.get("AUTH_HOST") == "0.0.0.0", "auth must bind 0.0.0.0 to be reachable"  # noqa: S104
    assert [str(p) for p in auth.get("expose", [])] == [port], f"auth must expose only {port}"
    assert _environment(services["gateway"]).get("AUTH_SERVICE_URL") == f"http://auth:{port}", (
        "gateway's AUTH_SERVICE_URL does not point at the auth service's port"
    )
    assert f":{port}/healthz" in json.dumps(auth["healthcheck"]["test"]), (
        "auth healthcheck does not probe its own port's /healthz"
    )


def test_app_services_use_backing_services_by_name(services: dict[str, dict[str, Any]]) -> None:
    for name in ("auth", "migrate"):
        url = _environment(services[name]).get("DATABASE_URL", "")
        assert url.startswith("postgresql+psycopg2://") and "@postgres:5432/" in url, (
            f"{name}'s DATABASE_URL does not point at the postgres service"
        )
    for name in ("auth", "gateway"):
        assert _environment(services[name]).get("REDIS_URL", "").startswith("redis://redis:"), (
            f"{name}'s REDIS_URL does not point at the redis service"
        )


def test_depends_on_waits_for_health(services: dict[str, dict[str, Any]]) -> None:
    oneshots = one_shot(services)
    for name, service in services.items():
        for dep, spec in _depends_on(service).items():
            assert dep in services, f"{name} depends on unknown service {dep}"
            want = "service_completed_successfully" if dep in oneshots else "service_healthy"
            assert spec.get("condition") == want, (
                f"{name} depends on {dep} with condition {spec.get('condition')}, want {want}"
            )
    assert set(_depends_on(services["auth"])) >= {"postgres", "redis", "migrate"}, (
        "auth must wait for postgres, redis and the migration"
    )
    assert "auth" in _depends_on(services["gateway"]), "gateway must wait for auth"
    assert "postgres" in _depends_on(services["migrate"]), "migrate must wait for postgres"


def test_app_containers_run_the_right_commands(services: dict[str, dict[str, Any]]) -> None:
    assert services["migrate"]["command"] == ["python", "-m", "auth_service.cli", "migrate"], (
        "migrate must run `python -m auth_service.cli migrate`"
    )
    for name, conf in GUNICORN_CONFS.items():
        command = services[name]["command"]
        assert command[:2] == ["gunicorn", "-c"], f"{name} does not run gunicorn -c <conf>"
        assert (ROOT / command[2]) == conf, f"{name} runs {command[2]}, want {conf.name}"
        assert conf.is_file(), f"{command[2]} (command of {name}) does not exist"
        # SERVICE tells the image's HEALTHCHECK which port to probe outside compose.
        assert _environment(services[name]).get("SERVICE") == name, f"{name} must set SERVICE"


def test_app_containers_read_env_and_keep_the_signing_key(
    services: dict[str, dict[str, Any]],
) -> None:
    for name in ("auth", "gateway", "migrate"):
        env_files = services[name].get("env_file", [])
        assert ".env" in env_files, f"{name} does not read .env (env_file)"
        assert services[name].get("user") in (None, "app", "10001"), f"{name} overrides USER"
    mounts = [str(volume).split(":") for volume in services["auth"].get("volumes", [])]
    assert any(target == "/app/var" for _, target, *_ in mounts), (
        "auth needs a named volume at /app/var: the generated signing key must outlive "
        "the container and be shared by replicas"
    )


def test_every_image_is_configurable(compose: dict[str, Any]) -> None:
    # Mirrors, private registries and deploy/offline/'s air-gapped images replace them.
    services = compose["services"]
    assert services["postgres"]["image"].startswith("${POSTGRES_IMAGE:-postgres:")
    assert services["redis"]["image"].startswith("${REDIS_IMAGE:-redis:")
    for name in ("auth", "gateway", "migrate"):
        args = services[name]["build"]["args"]
        assert args["PYTHON_IMAGE"].startswith("${PYTHON_IMAGE:-python:3.11"), name
    assert "ARG PYTHON_IMAGE=python:3.11" in DOCKERFILE.read_text()


def test_compose_file_is_readable_by_compose_v1(compose: dict[str, Any]) -> None:
    # Compose v1 (1.29) rejects a top-level `name:` and env_file's `path:`/`required:` form.
    assert "name" not in compose, "a top-level name: breaks Compose v1; the Makefile names it"
    for name, service in compose["services"].items():
        for item in service.get("env_file", []):
            assert isinstance(item, str), f"{name}: env_file {item!r} needs Compose >= 2.24"


def test_compose_variables_are_documented(
    compose: dict[str, Any], env_example: dict[str, str | None]
) -> None:
    # `$${X}`/`$$X` is escaped for the container's shell, not interpolated by compose.
    text = COMPOSE_FILE.read_text()
    interpolated = set(re.findall(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)", text))
    missing = sorted(interpolated - set(env_example))
    assert not missing, f"docker-compose.yml interpolates {missing}, absent from .env.example"
    for name, service in compose["services"].items():
        unset = sorted(set(_environment(service)) - set(env_example))
        assert not unset, f"service {name} sets {unset}, absent from .env.example"


# --------------------------------------------------------------------------- Dockerfile


def test_dockerfile_is_multi_stage_and_unprivileged() -> None:
    stages = dockerfile_stages()
    assert len(stages) >= 2, f"Dockerfile has {len(stages)} FROM stage(s), want a builder + runtime"
    final = stages[-1]
    users = instructions(final, "USER")
    assert users, "the final stage has no USER: the app would run as root"
    assert users[-1].split(":")[0] not in ("root", "0"), f"final USER is {users[-1]}"
    env = " ".join(instructions(final, "ENV"))
    for setting in ("PYTHONDONTWRITEBYTECODE=1", "PYTHONUNBUFFERED=1"):
        assert setting in env, f"the final stage does not set {setting}"


def test_dockerfile_final_stage_has_no_compilers() -> None:
    final = " ".join(dockerfile_stages()[-1]).lower()
    for tool in ("gcc", "build-essential", "g++", "libpq-dev", "apt-get install"):
        assert tool not in final, f"the final stage installs {tool!r}; keep it in the builder"


def test_dockerfile_healthcheck_probes_healthz() -> None:
    (check,) = instructions(dockerfile_stages()[-1], "HEALTHCHECK")
    assert "/healthz" in check, "the image HEALTHCHECK does not probe /healthz"
    assert "AUTH_PORT" in check and "GATEWAY_PORT" in check and "SERVICE" in check, (
        "the image HEALTHCHECK must pick the port from SERVICE (auth or gateway)"
    )


def test_dockerfile_copies_what_the_app_needs() -> None:
    final = dockerfile_stages()[-1]
    sources: set[str] = set()
    for args in instructions(final, "COPY"):
        parts = [part for part in args.split() if not part.startswith("--")]
        if "--from=" not in args:
            sources.update(part.rstrip("/") for part in parts[:-1])
    missing = sorted(set(APP_PATHS) - sources)
    assert not missing, f"the final stage does not COPY {missing}"
    assert any(
        "--from=builder" in args and "/opt/venv" in args for args in instructions(final, "COPY")
    ), "the final stage does not copy the builder's venv"
    # An allow-list .dockerignore must let every COPY source into the build context.
    ignore = DOCKERIGNORE.read_text().splitlines()
    if "*" in ignore:
        for source in sources:
            assert f"!{source}" in ignore, f".dockerignore keeps {source} out of the build context"
    assert ".env" not in {line.lstrip("!") for line in ignore if line.startswith("!")}, (
        ".dockerignore lets .env (secrets) into the build context"
    )


@pytest.mark.parametrize("path", APP_PATHS)
def test_dockerfile_copy_sources_exist(path: str) -> None:
    # A missing source fails `docker build`; no engine here, so check it.
    require_file(ROOT / path, "see the team plan for its owner")


def test_dockerfile_default_command_is_a_gunicorn_conf() -> None:
    (cmd,) = instructions(dockerfile_stages()[-1], "CMD")
    argv = json.loads(cmd)
    assert argv[:2] == ["gunicorn", "-c"], f"the image CMD is {argv}, want gunicorn -c <conf>"
    assert (ROOT / argv[2]).is_file(), f"the image CMD's config {argv[2]} does not exist"


# --------------------------------------------------------------------------- gunicorn


@pytest.mark.parametrize("service", sorted(GUNICORN_CONFS))
def test_gunicorn_conf_defaults(service: str, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg, namespace = load_gunicorn_conf(GUNICORN_CONFS[service], monkeypatch)
    # SECURITY: gunicorn's default believes X-Forwarded-* from loopback; ours must not.
    assert "forwarded_allow_ips" in namespace, f"{service}: forwarded_allow_ips not set explicitly"
    assert cfg.forwarded_allow_ips == [], (
        f"{service}: forwarded_allow_ips={cfg.forwarded_allow_ips}, want [] without TRUSTED_PROXIES"
    )
    assert cfg.proxy_allow_ips == [], f"{service}: proxy_allow_ips={cfg.proxy_allow_ips}"
    assert cfg.forwarder_headers == [], f"{service}: proxies may rewrite {cfg.forwarder_headers}"
    assert cfg.worker_class_str == "gunicorn_worker.KeepAliveThreadWorker", (
        f"{service}: worker_class {cfg.worker_class_str}"
    )
    assert issubclass(cfg.worker_class, ThreadWorker), f"{service}: not a threaded worker"
    assert cfg.reuse_port, f"{service}: one shared listening socket (unbalanced workers)"
    assert cfg.threads == {"auth": 4, "gateway": 8}[service], f"{service}: threads {cfg.threads}"
    assert cfg.workers == 2, f"{service}: workers {cfg.workers}, want WEB_CONCURRENCY default 2"
    port = {"auth": "8001", "gateway": "8000"}[service]
    assert cfg.bind == [f"127.0.0.1:{port}"], f"{service}: bind {cfg.bind}"
    assert cfg.wsgi_app == f"{service}_service.wsgi:app", f"{service}: wsgi_app {cfg.wsgi_app}"
    assert cfg.accesslog is None, f"{service}: gunicorn access log is on (the app logs JSON)"
    assert cfg.errorlog == "-", f"{service}: error log not on stderr"
    assert (cfg.timeout, cfg.graceful_timeout, cfg.keepalive) == (30, 20, 5), (
        f"{service}: timeouts {(cfg.timeout, cfg.graceful_timeout, cfg.keepalive)}"
    )
    assert cfg.limit_request_line <= 8190 and cfg.limit_request_fields <= 100, (
        f"{service}: request limits loosened"
    )
    assert cfg.control_socket_disable, f"{service}: the per-user control socket is on"


@pytest.mark.parametrize("service", sorted(GUNICORN_CONFS))
def test_gunicorn_conf_reads_the_environment(service: str, monkeypatch: pytest.MonkeyPatch) -> None:
    prefix = service.upper()
    cfg, _ = load_gunicorn_conf(
        GUNICORN_CONFS[service],
        monkeypatch,
        TRUSTED_PROXIES="10.1.2.3/8, 192.168.0.7",
        WEB_CONCURRENCY="5",
        **{f"{prefix}_HOST": "0.0.0.0", f"{prefix}_PORT": "9123", f"{prefix}_THREADS": "3"},  # noqa: S104
    )
    assert cfg.forwarded_allow_ips == ["10.0.0.0/8", "192.168.0.7/32"], (
        f"{service}: TRUSTED_PROXIES gave forwarded_allow_ips={cfg.forwarded_allow_ips}"
    )
    assert cfg.proxy_allow_ips == cfg.forwarded_allow_ips, f"{service}: proxy_allow_ips differs"
    assert cfg.bind == ["0.0.0.0:9123"], f"{service}: bind {cfg.bind}"
    assert (cfg.workers, cfg.threads) == (5, 3), f"{service}: {(cfg.workers, cfg.threads)}"


@pytest.mark.parametrize(
    ("name", "value"),
    [("TRUSTED_PROXIES", "10.0.0.0/8,not-an-ip"), ("PORT", "80a"), ("PORT", "0")],
)
@pytest.mark.parametrize("service", sorted(GUNICORN_CONFS))
def test_gunicorn_conf_refuses_bad_values(
    service: str, name: str, value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    variable = f"{service.upper()}_{name}" if name == "PORT" else name
    with pytest.raises(EnvError, match=variable):
        load_gunicorn_conf(GUNICORN_CONFS[service], monkeypatch, **{variable: value})


# A master with nothing to bind: on_starting's port check has nothing to probe.
NO_LISTENERS = SimpleNamespace(master_pid=0, cfg=SimpleNamespace(address=[]))


@pytest.mark.parametrize("service", sorted(GUNICORN_CONFS))
def test_prometheus_hooks_reset_and_reap(
    service: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    metrics_dir = tmp_path / "prometheus"
    metrics_dir.mkdir()
    (metrics_dir / "counter_4242.db").write_bytes(b"stale")
    keep = metrics_dir / "README"
    keep.write_text("not ours")
    _, hooks = load_gunicorn_conf(
        GUNICORN_CONFS[service], monkeypatch, PROMETHEUS_MULTIPROC_DIR=str(metrics_dir)
    )
    hooks["on_starting"](NO_LISTENERS)
    assert sorted(p.name for p in metrics_dir.iterdir()) == ["README"], (
        f"{service}: on_starting did not remove only the stale *.db files"
    )
    # prometheus_client names a live gauge's file after the pid that wrote it.
    live = metrics_dir / "gauge_livesum_4242.db"
    live.write_bytes(b"")
    other = metrics_dir / "gauge_livesum_4343.db"
    other.write_bytes(b"")
    hooks["child_exit"](None, SimpleNamespace(pid=4242))
    assert not live.exists(), f"{service}: child_exit left the dead worker's live gauge"
    assert other.exists(), f"{service}: child_exit removed another worker's gauge"

    fresh = tmp_path / "created"
    _, hooks = load_gunicorn_conf(
        GUNICORN_CONFS[service], monkeypatch, PROMETHEUS_MULTIPROC_DIR=str(fresh)
    )
    hooks["on_starting"](NO_LISTENERS)
    assert fresh.is_dir(), f"{service}: on_starting did not create PROMETHEUS_MULTIPROC_DIR"


PROBE_APP = """
import json, os

def app(environ, start_response):
    body = json.dumps({"scheme": environ["wsgi.url_scheme"], "pid": os.getpid()}).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(body)))])
    return [body]
"""


@pytest.fixture
def run_gunicorn(tmp_path: Path) -> Iterator[Any]:
    """Start gunicorn with one of our configs and a probe app; stop it afterwards."""
    (tmp_path / "probe_app.py").write_text(PROBE_APP)
    started: list[subprocess.Popen[bytes]] = []

    def start(service: str, **env: str) -> int:
        port = free_port()
        environ = {k: v for k, v in os.environ.items() if k not in GUNICORN_ENV}
        environ.update(env, **{f"{service.upper()}_PORT": str(port)})
        environ["PROMETHEUS_MULTIPROC_DIR"] = str(tmp_path / f"metrics-{port}")
        process = subprocess.Popen(  # the probe app stands in for ours: only the conf is tested
            [sys.executable, "-m", "gunicorn", "-c", str(GUNICORN_CONFS[service]),
             "--pythonpath", str(tmp_path), "probe_app:app"],
            env=environ, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )  # fmt: skip
        started.append(process)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if process.poll() is not None:
                output = process.stdout.read().decode() if process.stdout else ""
                pytest.fail(f"gunicorn with {service}'s config exited: {output[-2000:]}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                return port
            except OSError:
                time.sleep(0.1)
        pytest.fail(f"gunicorn with {service}'s config did not listen on {port}")

    yield start
    for process in started:
        process.terminate()
        try:
            process.wait(timeout=25)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _get(port: int, headers: dict[str, str]) -> tuple[http.client.HTTPResponse, dict[str, Any]]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    connection.request("GET", "/", headers=headers)
    response = connection.getresponse()
    body = json.loads(response.read())
    connection.close()
    return response, body


@pytest.mark.slow
@pytest.mark.parametrize("service", sorted(GUNICORN_CONFS))
def test_gunicorn_ignores_forwarded_proto_from_loopback(service: str, run_gunicorn: Any) -> None:
    # gunicorn's own default would trust 127.0.0.1 and report https here.
    port = run_gunicorn(service)
    response, body = _get(port, {"X-Forwarded-Proto": "https"})
    assert response.status == 200, f"{service}: probe answered {response.status}"
    assert body["scheme"] == "http", (
        f"{service}: X-Forwarded-Proto from an untrusted peer was believed"
    )


@pytest.mark.slow
def test_gunicorn_believes_configured_proxies(run_gunicorn: Any) -> None:
    port = run_gunicorn("gateway", TRUSTED_PROXIES="127.0.0.1")
    _, body = _get(port, {"X-Forwarded-Proto": "https"})
    assert body["scheme"] == "https", "X-Forwarded-Proto from a TRUSTED_PROXIES peer was ignored"


# --------------------------------------------------------------------------- .env.example


def test_env_example_lists_the_design_names(env_example: dict[str, str | None]) -> None:
    missing = sorted(OPERATOR_ENV_NAMES - set(env_example))
    assert not missing, f".env.example lacks {missing}"


def test_env_example_has_no_empty_values(env_example: dict[str, str | None]) -> None:
    # The gateway reads `KEY=` as the empty string, not as unset: comment such lines out.
    empty = sorted(name for name, value in env_example.items() if value == "")
    assert not empty, f".env.example sets {empty} to an empty value"


def test_env_example_embedded_default_needs_no_servers(
    env_example: dict[str, str | None],
) -> None:
    active = sorted(n for n in ("DATABASE_URL", "REDIS_URL") if env_example.get(n) is not None)
    assert not active, f".env.example sets {active}; the local default is SQLite + in-memory"


def _env_names_read_by(path: Path) -> set[str]:
    """Names a settings module reads: an all-caps literal as a call's first argument."""
    source = path.read_text()
    return set(re.findall(r"\w\(\s*[\"']([A-Z][A-Z0-9]*_[A-Z0-9_]+)[\"']", source)) | set(
        re.findall(r"environ\[\s*[\"']([A-Z][A-Z0-9_]+)[\"']\s*\]", source)
    )


def test_env_name_scanner_finds_names() -> None:
    # Guards the check below against a regex that silently matches nothing.
    names = _env_names_read_by(GUNICORN_CONFS["auth"])
    assert {"AUTH_PORT", "AUTH_HOST", "AUTH_THREADS"} <= names, names
    shared = _env_names_read_by(GUNICORN_COMMON)
    assert {"TRUSTED_PROXIES", "WEB_CONCURRENCY", "PROMETHEUS_MULTIPROC_DIR"} <= shared, shared


@pytest.mark.parametrize(
    "path",
    [*SETTINGS_MODULES, *GUNICORN_CONFS.values(), GUNICORN_COMMON],
    ids=lambda p: str(p.relative_to(ROOT)),
)
def test_every_variable_read_is_in_env_example(
    path: Path, env_example: dict[str, str | None]
) -> None:
    require_file(path, "the service's owner")
    names = _env_names_read_by(path)
    assert names, f"found no environment variable names in {path.relative_to(ROOT)}"
    missing = sorted(names - set(env_example))
    assert not missing, f"{path.relative_to(ROOT)} reads {missing}, absent from .env.example"


@pytest.mark.parametrize("service", ["auth_service", "gateway_service"])
def test_env_example_values_pass_the_settings(
    service: str, env_example: dict[str, str | None]
) -> None:
    require_file(ROOT / service / "settings.py", f"{service}'s owner")
    from importlib import import_module

    settings = import_module(f"{service}.settings")
    values = {name: value for name, value in env_example.items() if value is not None}
    # Raises SettingsError naming the variable when an example value is refused.
    settings.Settings.from_env(values)


@pytest.mark.parametrize(
    ("module", "owner"),
    [
        ("auth_service/wsgi.py", "lead"),
        ("gateway_service/wsgi.py", "gateway helper"),
        ("auth_service/cli.py", "lead"),
    ],
)
def test_modules_the_containers_run_exist(module: str, owner: str) -> None:
    # wsgi_app of each gunicorn conf, and `python -m auth_service.cli migrate`.
    require_file(ROOT / module, owner)


def test_every_direct_environment_read_is_in_env_example(
    env_example: dict[str, str | None],
) -> None:
    # Outside settings.py (cli.py's FIRST_SUPERUSER_*, migrations/env.py), only
    # os.environ/getenv reads count: other all-caps literals there are not settings.
    pattern = re.compile(
        r"(?:environ\.get|getenv|environ\.setdefault)\(\s*[\"']([A-Z][A-Z0-9_]+)[\"']"
        r"|environ\[\s*[\"']([A-Z][A-Z0-9_]+)[\"']\s*\]"
    )
    missing: dict[str, list[str]] = {}
    for package in ("auth_service", "gateway_service", "migrations"):
        for path in sorted((ROOT / package).rglob("*.py")):
            for match in pattern.finditer(path.read_text()):
                name = match.group(1) or match.group(2)
                if name not in env_example:
                    missing.setdefault(name, []).append(str(path.relative_to(ROOT)))
    assert not missing, f"read from the environment but absent from .env.example: {missing}"


# --------------------------------------------------------------------------- image layout


@pytest.fixture(scope="module")
def image_layout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """/app as the final stage builds it: only the COPY'd paths, plus var/keys."""
    for path in APP_PATHS:
        require_file(ROOT / path, "see the team plan for its owner")
    app_dir = tmp_path_factory.mktemp("image") / "app"
    app_dir.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for path in APP_PATHS:
        source = ROOT / path
        if source.is_dir():
            shutil.copytree(source, app_dir / path, ignore=ignore)
        else:
            shutil.copy2(source, app_dir / path)
    (app_dir / "var" / "keys").mkdir(parents=True)
    return app_dir


def _image_env(app_dir: Path, **extra: str) -> dict[str, str]:
    """The image's ENV, not the developer's: nothing points back into the repository."""
    return {
        "PATH": os.environ["PATH"],
        "HOME": str(app_dir),
        "PYTHONPATH": str(app_dir),
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
        "SERVICE": "auth",
        "AUTH_PORT": "8001",
        "GATEWAY_PORT": "8000",
        "BCRYPT_ROUNDS": "4",
        **extra,
    }


def _run(argv: list[str], app_dir: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, cwd=app_dir, env=_image_env(app_dir, **env), capture_output=True, text=True,
        timeout=120, check=False,
    )  # fmt: skip


@pytest.mark.slow
def test_image_layout_is_self_sufficient(image_layout: Path) -> None:
    # The migrate container's command, on the SQLite default under /app/var.
    migrate = _run([sys.executable, "-m", "auth_service.cli", "migrate"], image_layout)
    assert migrate.returncode == 0, f"migrate failed in the image layout: {migrate.stderr[-2000:]}"
    assert (image_layout / "var" / "authgate.db").is_file(), "migrate did not use /app/var"
    probe = (
        "import auth_service.wsgi, gateway_service.wsgi, auth_service, gateway_service;"
        "print(auth_service.__file__); print(gateway_service.__file__)"
    )
    imported = _run([sys.executable, "-c", probe], image_layout)
    assert imported.returncode == 0, f"the wsgi apps do not load: {imported.stderr[-2000:]}"
    for line in imported.stdout.split():
        assert line.startswith(str(image_layout)), f"imported {line}, not the image's copy"


@pytest.mark.slow
def test_image_healthcheck_command_reports_health(image_layout: Path) -> None:
    (check,) = instructions(dockerfile_stages()[-1], "HEALTHCHECK")
    argv = json.loads(check.split("CMD", 1)[1])
    port = str(free_port())
    down = _run(argv, image_layout, AUTH_PORT=port)
    assert down.returncode != 0, "the HEALTHCHECK passes with nothing listening"
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", "deploy/gunicorn_auth.conf.py"],
        cwd=image_layout, env=_image_env(image_layout, AUTH_PORT=port, WEB_CONCURRENCY="1"),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        result = down
        while time.monotonic() < deadline and server.poll() is None:
            result = _run(argv, image_layout, AUTH_PORT=port)
            if result.returncode == 0:
                break
            time.sleep(0.3)
        assert result.returncode == 0, (
            f"the HEALTHCHECK fails against a running auth service: {result.stderr[-1500:]}"
        )
    finally:
        server.terminate()
        server.wait(timeout=25)
