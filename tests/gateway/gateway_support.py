"""Helpers for gateway tests: servers on free ports, test keys and tokens, raw upstreams."""

from __future__ import annotations

import base64
import contextlib
import datetime
import ipaddress
import json
import os
import socket
import socketserver
import ssl
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from jose import jwt
from process_support import (
    REPO,
    TEST_INTERNAL_API_TOKEN,
    free_port,
    running_auth_service,
    start_gunicorn,
    stop,
    wait_http,
    wait_listeners,
)
from requests_toolbelt.adapters.source import SourceAddressAdapter

HERE = Path(__file__).resolve().parent


def b64url_uint(value: int) -> str:
    """Base64url of a big-endian unsigned integer, as JWK wants it."""
    return _b64url(value.to_bytes((value.bit_length() + 7) // 8, "big"))


@dataclass
class SigningKey:
    """A test signing key and its public JWK."""

    kid: str
    alg: str
    private_pem: bytes
    jwk: dict[str, str]


def make_rsa_key(kid: str | None = None) -> SigningKey:
    """A fresh RS256 key pair with its JWK."""
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    numbers = private.public_key().public_numbers()
    kid = kid or uuid.uuid4().hex
    jwk = {
        "kty": "RSA",
        "kid": kid,
        "use": "sig",
        "alg": "RS256",
        "n": b64url_uint(numbers.n),
        "e": b64url_uint(numbers.e),
    }
    return SigningKey(kid, "RS256", _pkcs8(private), jwk)


def make_ec_key(kid: str | None = None) -> SigningKey:
    """A fresh ES256 key pair with its JWK."""
    private = ec.generate_private_key(ec.SECP256R1())
    numbers = private.public_key().public_numbers()
    kid = kid or uuid.uuid4().hex
    jwk = {
        "kty": "EC",
        "kid": kid,
        "use": "sig",
        "alg": "ES256",
        "crv": "P-256",
        "x": _b64url(numbers.x.to_bytes(32, "big")),
        "y": _b64url(numbers.y.to_bytes(32, "big")),
    }
    return SigningKey(kid, "ES256", _pkcs8(private), jwk)


def _pkcs8(private: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def public_pem(key: SigningKey) -> str:
    """The SPKI PEM of a key's public half (for the Express peer)."""
    private = serialization.load_pem_private_key(key.private_pem, password=None)
    return (
        private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


@dataclass
class Minter:
    """Mints access tokens like the auth service does, with overridable claims."""

    key: SigningKey
    issuer: str = "authgate"
    audience: str = "authgate-api"

    def claims(self, **overrides: Any) -> dict[str, Any]:
        """A valid claim set; pass a value of None to drop a claim."""
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": str(uuid.uuid4()),
            "iat": now,
            "nbf": now,
            "exp": now + 600,
            "jti": uuid.uuid4().hex,
            "sid": str(uuid.uuid4()),
            "role": "user",
        }
        claims.update(overrides)
        return {k: v for k, v in claims.items() if v is not None}

    def token(
        self, key: SigningKey | None = None, headers: dict[str, Any] | None = None, **overrides: Any
    ) -> str:
        """Sign the claims (defaults: a fresh user and session, valid for 10 minutes)."""
        key = key or self.key
        return jwt.encode(
            self.claims(**overrides),
            key.private_pem.decode(),
            algorithm=key.alg,
            headers={"kid": key.kid, **(headers or {})},
        )


@dataclass
class Echo:
    """The running echo upstream."""

    url: str
    jwks_file: Path
    keys: list[SigningKey] = field(default_factory=list)

    def publish(self, *keys: SigningKey) -> None:
        """Serve exactly these keys from /.well-known/jwks.json."""
        self.keys = list(keys)
        tmp = self.jwks_file.with_suffix(".tmp")
        tmp.write_text(json.dumps({"keys": [k.jwk for k in keys]}))
        tmp.replace(self.jwks_file)

    def hits(self) -> dict[str, int]:
        """How many echo and JWKS requests have arrived so far."""
        return requests.get(f"{self.url}/__hits", timeout=5).json()


@dataclass
class PrivateRedis:
    """A redis-server of our own that tests may stop."""

    port: int

    @property
    def url(self) -> str:
        """Its URL."""
        return f"redis://127.0.0.1:{self.port}/0"

    def shutdown(self) -> None:
        """Stop it (never the shared one)."""
        subprocess.run(
            ["redis-cli", "-p", str(self.port), "shutdown", "nosave"],
            capture_output=True,
            timeout=10,
            check=False,
        )


def gateway_env(echo: Echo, **overrides: str) -> dict[str, str]:
    """Environment for a gateway whose routes all point at the echo upstream."""
    routes = [
        {"prefix": "/api/v1/auth", "upstream": echo.url, "auth": "spec"},
        {"prefix": "/api/v1/users", "upstream": echo.url, "auth": "spec"},
        {"prefix": "/.well-known/jwks.json", "upstream": echo.url, "auth": "none"},
        {"prefix": "/api/v1/orders", "upstream": echo.url, "auth": "required"},
        {"prefix": "/api/v1/catalog", "upstream": echo.url, "auth": "none", "rate_limit": "none"},
    ]
    env = {
        "AUTH_SERVICE_URL": echo.url,
        "GATEWAY_ROUTES": json.dumps(routes),
        "GATEWAY_READ_TIMEOUT": "1.5",
        "GATEWAY_CONNECT_TIMEOUT": "1",
        "GATEWAY_MAX_BODY_BYTES": "4096",
        "RATE_LIMIT_DEFAULT": "100000/minute",
        "RATE_LIMIT_AUTH": "100000/minute",
    }
    env.update(overrides)
    return env


@dataclass
class Gateway:
    """A gateway under real gunicorn; its output goes to a file (a pipe nobody reads would
    fill after a few hundred access lines and stall the workers)."""

    url: str
    port: int
    proc: subprocess.Popen
    log: Path

    def output(self) -> str:
        """Everything the gateway has written so far (access lines, gunicorn's log)."""
        return self.log.read_text(errors="replace")

    def stop(self) -> str:
        """Stop the server and remove its log file; what it wrote, for a last look."""
        stop(self.proc)
        output = self.output()
        self.log.unlink(missing_ok=True)
        return output


def launch_gateway(env: dict[str, str], workers: int = 2) -> Gateway:
    """Start the gateway under gunicorn with the deploy config (N workers)."""
    port = free_port()
    full_env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL",)}
    full_env.update(
        {
            "GATEWAY_PORT": str(port),
            "WEB_CONCURRENCY": str(workers),
            "GATEWAY_THREADS": "8",
            "PYTHONPATH": str(REPO),
            "INTERNAL_API_TOKEN": TEST_INTERNAL_API_TOKEN,
        }
    )
    full_env.update(env)
    fd, name = tempfile.mkstemp(prefix=f"gateway-{port}-", suffix=".log")
    with os.fdopen(fd, "wb") as log:
        proc = start_gunicorn("gunicorn_gateway.conf.py", full_env, log)
    gateway = Gateway(f"http://127.0.0.1:{port}", port, proc, Path(name))
    try:
        wait_http(f"{gateway.url}/healthz", proc=proc)
        wait_listeners(port, workers)
    except Exception as ex:
        stop(proc)
        raise RuntimeError(f"the gateway did not start:\n{gateway.output()[-3000:]}") from ex
    return gateway


# The gateway's own rate limits, out of the way of tests that count something else.
UNLIMITED = {"RATE_LIMIT_AUTH": "100000/minute", "RATE_LIMIT_DEFAULT": "100000/minute"}


@contextlib.contextmanager
def gateway_before_auth(
    auth_root: Path,
    redis_url: str | None = None,
    *,
    gateway_env: dict[str, str] | None = None,
    **auth_env: Any,
) -> Iterator[Gateway]:
    """A real gateway (default routes) in front of a real auth service that trusts it.

    Clients reach the gateway directly (it trusts no X-Forwarded-For); the auth service
    trusts the gateway's, so it sees each client's own address. With `redis_url`, both
    share that Redis (the gateway's rate-limit keys under a prefix of its own).
    """
    shared = {"REDIS_URL": redis_url} if redis_url else {}
    with running_auth_service(
        auth_root, TRUSTED_PROXIES="127.0.0.1/32", LOG_FORMAT="console", **shared, **auth_env
    ) as auth_url:
        env = {"AUTH_SERVICE_URL": auth_url, "TRUSTED_PROXIES": "", **UNLIMITED, **shared}
        if redis_url:
            env["GATEWAY_RATE_LIMIT_KEY_PREFIX"] = f"test-gw:{uuid.uuid4().hex}:rl:"
        gateway = launch_gateway({**env, **(gateway_env or {})})
        try:
            yield gateway
        finally:
            gateway.stop()


class LoopbackClient:
    """A client of the gateway whose connections leave from one loopback address."""

    def __init__(self, gateway: Gateway, source: str, user_agent: str) -> None:
        self.base = f"{gateway.url}/api/v1"
        self.http = requests.Session()
        self.http.mount("http://", SourceAddressAdapter(source))
        self.http.headers["User-Agent"] = user_agent

    def call(self, method: str, path: str, token: str | None = None, **kw: Any) -> Any:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return self.http.request(method, self.base + path, headers=headers, timeout=30, **kw)


class RawUpstream(socketserver.ThreadingTCPServer):
    """A socket server that answers every request with one fixed raw HTTP response."""

    allow_reuse_address = True
    daemon_threads = True

    def __init__(self, response: bytes, port: int = 0) -> None:
        self.response = response
        self.requests: list[bytes] = []
        super().__init__(("127.0.0.1", port), _RawHandler)

    @property
    def url(self) -> str:
        """Its base URL."""
        return f"http://127.0.0.1:{self.server_address[1]}"

    def answer(self, sock: socket.socket) -> None:
        """Send the whole answer at once."""
        if self.response:
            sock.sendall(self.response)


class DripUpstream(RawUpstream):
    """A RawUpstream that sends its answer one byte every `interval` seconds.

    `dropped` is set once the peer has closed the connection on it mid-answer.
    """

    def __init__(self, response: bytes, interval: float) -> None:
        self.interval = interval
        self.dropped = threading.Event()
        super().__init__(response)

    def answer(self, sock: socket.socket) -> None:
        """Trickle the answer; stop when the peer goes away."""
        try:
            for byte in self.response:
                sock.sendall(bytes([byte]))
                time.sleep(self.interval)
        except OSError:
            self.dropped.set()


class TlsRawUpstream(RawUpstream):
    """A RawUpstream behind TLS with the given server context."""

    def __init__(self, response: bytes, context: ssl.SSLContext) -> None:
        self.context = context
        super().__init__(response)

    @property
    def url(self) -> str:
        """Its https base URL."""
        return f"https://127.0.0.1:{self.server_address[1]}"

    def get_request(self) -> tuple[socket.socket, Any]:
        """Accept and complete the handshake (a failed one is dropped by socketserver)."""
        sock, address = super().get_request()
        return self.context.wrap_socket(sock, server_side=True), address


def self_signed_certificate() -> tuple[bytes, bytes]:
    """A self-signed certificate for IP 127.0.0.1 and its key, both PEM."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "upstream test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


class _RawHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = self.request.recv(65536)
            if not chunk:
                return
            data += chunk
        self.server.requests.append(data)
        self.server.answer(self.request)
