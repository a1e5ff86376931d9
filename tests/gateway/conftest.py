"""Fixtures for gateway tests: real gunicorn processes, a test JWKS, tokens, Redis."""

from __future__ import annotations

import os
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator

import pytest
import redis
from gateway_support import (
    HERE,
    Echo,
    Gateway,
    Minter,
    PrivateRedis,
    RawUpstream,
    SigningKey,
    gateway_env,
    launch_gateway,
    make_rsa_key,
)
from process_support import GUNICORN, free_port, stop, wait_http

from gateway_service.settings import Settings


@pytest.fixture(scope="session")
def signing_key() -> SigningKey:
    """The key the echo upstream publishes by default."""
    return make_rsa_key()


@pytest.fixture(scope="session")
def echo(tmp_path_factory: pytest.TempPathFactory, signing_key: SigningKey) -> Iterator[Echo]:
    """The echo upstream under gunicorn (one gthread worker, so hit counts are global)."""
    port = free_port()
    jwks = tmp_path_factory.mktemp("echo") / "jwks.json"
    server = Echo(f"http://127.0.0.1:{port}", jwks)
    server.publish(signing_key)
    env = {**os.environ, "ECHO_JWKS_FILE": str(jwks)}
    proc = subprocess.Popen(
        [
            GUNICORN,
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            "1",
            "--worker-class",
            "gthread",
            "--threads",
            "32",
            "--pythonpath",
            str(HERE),
            "--log-level",
            "warning",
            "--no-control-socket",
            "gateway_echo_upstream:app",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_http(f"{server.url}/healthz", proc=proc)
        yield server
    finally:
        stop(proc)


@pytest.fixture
def minter(signing_key: SigningKey) -> Minter:
    """Tokens signed by the published key."""
    return Minter(signing_key)


@pytest.fixture
def redis_client(redis_url: str) -> redis.Redis:
    """A client for the shared Redis."""
    return redis.Redis.from_url(redis_url)


@pytest.fixture
def key_prefix(redis_client: redis.Redis) -> Iterator[str]:
    """A rate-limit key prefix unique to this test; its keys are deleted afterwards."""
    prefix = f"test-gw:{uuid.uuid4().hex}:rl:"
    yield prefix
    for key in redis_client.scan_iter(match=prefix + "*"):
        redis_client.delete(key)


@pytest.fixture
def private_redis(redis_url: str) -> Iterator[PrivateRedis]:
    """Start a throwaway redis-server on a free port."""
    port = free_port()
    subprocess.run(
        [
            "redis-server",
            "--port",
            str(port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "yes",
            "--bind",
            "127.0.0.1",
        ],
        check=True,
        timeout=10,
    )
    server = PrivateRedis(port)
    deadline = time.monotonic() + 10
    while True:
        try:
            redis.Redis(port=port, socket_timeout=1).ping()
            break
        except redis.RedisError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    yield server
    server.shutdown()


@pytest.fixture
def start_gateway() -> Iterator[Callable[..., Gateway]]:
    """Factory: start gateways for one test; all are stopped afterwards."""
    started: list[Gateway] = []

    def start(env: dict[str, str], workers: int = 2) -> Gateway:
        gateway = launch_gateway(env, workers)
        started.append(gateway)
        return gateway

    yield start
    for gateway in started:
        gateway.stop()


@pytest.fixture(scope="module")
def gateway(echo: Echo) -> Iterator[Gateway]:
    """A default gateway (in-memory limits) in front of the echo upstream, per module."""
    gw = launch_gateway(gateway_env(echo))
    yield gw
    gw.stop()


@pytest.fixture
def settings_for(echo: Echo) -> Callable[..., Settings]:
    """Build in-process Settings the way from_env would, pointed at the echo upstream."""

    def build(**overrides: str) -> Settings:
        return Settings.from_env(gateway_env(echo, **overrides))

    return build


@pytest.fixture
def raw_upstream() -> Iterator[Callable[[bytes], RawUpstream]]:
    """Factory for raw upstreams; each is shut down afterwards."""
    servers: list[RawUpstream] = []

    def make(response: bytes, port: int = 0) -> RawUpstream:
        server = RawUpstream(response, port)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.shutdown()
        server.server_close()
