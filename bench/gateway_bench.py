"""Gateway benchmark: direct vs our gateway vs the Express peer, with wrk on 127.0.0.1.

Run: .venv/bin/python bench/gateway_bench.py [--duration 5] [--connections 32] [--only-me]
    [--peer-dir DIR]
Prints requests/s and p50/p99 for a token-checked GET, the ratios, and the p50 latency
the gateway adds on a single connection. Then `GET /api/v1/auth/me` against the real auth
service (gunicorn, migrated SQLite, a registered user's token) directly and through the
gateway, and their ratio; `--only-me` runs just that part. Needs wrk, node/npm (the
Express peer is copied to a temporary directory and `npm install`ed there), and Redis on
127.0.0.1:6379 for the Redis run (skipped when unreachable).

The Express peer (the original design's gateway, the yardstick) is found at --peer-dir,
else $AUTHGATE_PEER_DIR (the directory with its server.js and package.json);
without it the rest is measured and the comparison is said to be skipped.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jose import jwt

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PEER_ENV = "AUTHGATE_PEER_DIR"
TARGET = "/api/v1/users/00000000-0000-0000-0000-000000000001"
HUGE_LIMIT = "1000000000/minute"


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_up(url: str, proc: subprocess.Popen, timeout: float = 30) -> None:
    """Wait for url to answer, or fail with the process's exit."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited with {proc.returncode}")
        try:
            requests.get(url, timeout=1)
            return
        except requests.RequestException:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


def b64u(value: int) -> str:
    """Base64url of an unsigned integer."""
    raw = value.to_bytes((value.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def make_key(tmp: Path) -> tuple[str, str, Path]:
    """RS256 key: (token, public PEM, JWKS file)."""
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    kid = uuid.uuid4().hex
    numbers = private.public_key().public_numbers()
    jwks = tmp / "jwks.json"
    jwks.write_text(
        json.dumps(
            {
                "keys": [
                    {
                        "kty": "RSA",
                        "kid": kid,
                        "use": "sig",
                        "alg": "RS256",
                        "n": b64u(numbers.n),
                        "e": b64u(numbers.e),
                    }
                ]
            }
        )
    )
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public = (
        private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    now = int(time.time())
    claims = {
        "iss": "authgate",
        "aud": "authgate-api",
        "sub": str(uuid.uuid4()),
        "iat": now,
        "nbf": now,
        "exp": now + 3600,
        "jti": uuid.uuid4().hex,
        "sid": str(uuid.uuid4()),
        "role": "user",
    }
    token = jwt.encode(claims, pem, algorithm="RS256", headers={"kid": kid})
    return token, public, jwks


def wrk(url: str, token: str, connections: int, duration: int, threads: int = 2) -> dict:
    """Run wrk and parse requests/s, p50 and p99 (ms) and the non-2xx count."""
    out = subprocess.run(
        [
            "wrk",
            f"-t{min(threads, connections)}",
            f"-c{connections}",
            f"-d{duration}s",
            "--latency",
            "-H",
            f"Authorization: Bearer {token}",
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=duration + 30,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    lat = {p: _ms(re.search(rf"\s{p}%\s+([\d.]+\w+)", out).group(1)) for p in ("50", "99")}
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors:.*", out)
    return {
        "rps": rps,
        "p50": lat["50"],
        "p99": lat["99"],
        "non2xx": int(bad.group(1)) if bad else 0,
        "socket_errors": errors.group(0) if errors else "",
    }


def median_run(runs: list[dict]) -> dict:
    """Per-field median over rounds."""
    return {
        key: statistics.median(r[key] for r in runs) if key != "socket_errors" else ""
        for key in runs[0]
    }


def _ms(text: str) -> float:
    value, unit = re.match(r"([\d.]+)(\w+)", text).groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


class Stack:
    """Starts and stops the processes of one benchmark run."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen] = []

    def start(self, args: list[str], env: dict[str, str], url: str, cwd: Path = REPO) -> None:
        proc = subprocess.Popen(
            args,
            cwd=cwd,
            env={**os.environ, **env},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.procs.append(proc)
        wait_up(url, proc)

    def start_fixed_upstream(self, jwks: Path, threads: int) -> str:
        """The trivial fixed-JSON upstream under one gthread worker; its base URL."""
        port = free_port()
        upstream = f"http://127.0.0.1:{port}"
        self.start(
            [
                str(BIN / "gunicorn"),
                "--bind",
                f"127.0.0.1:{port}",
                "--workers",
                "1",
                "--worker-class",
                "gthread",
                "--threads",
                str(threads),
                "--no-control-socket",
                "--log-level",
                "warning",
                "--pythonpath",
                str(REPO / "bench"),
                "gateway_fixed_upstream:app",
            ],
            {"BENCH_JWKS_FILE": str(jwks)},
            f"{upstream}/healthz",
        )
        return upstream

    def stop_all(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


def gateway_env(port: int, upstream: str, **extra: str) -> dict[str, str]:
    """Environment for our gateway in front of the fixed upstream."""
    env = {
        "GATEWAY_PORT": str(port),
        "AUTH_SERVICE_URL": upstream,
        "RATE_LIMIT_DEFAULT": HUGE_LIMIT,
        "RATE_LIMIT_AUTH": HUGE_LIMIT,
        "WEB_CONCURRENCY": os.environ.get("WEB_CONCURRENCY", "2"),
        "GATEWAY_THREADS": os.environ.get("GATEWAY_THREADS", "8"),
        "GUNICORN_LOG_LEVEL": "warning",
        "PYTHONPATH": str(REPO),
    }
    env.pop("REDIS_URL", None)
    env.update(extra)
    return env


def install_peer(peer: Path | None, tmp: Path) -> Path | None:
    """Copy the Express peer to tmp and npm install it there (never in the repo)."""
    if peer is None:
        print(f"!! no Express peer given (--peer-dir or ${PEER_ENV}): skipping it")
        return None
    if not (peer / "server.js").is_file():
        print(f"!! no Express peer at {peer} (--peer-dir or ${PEER_ENV}): skipping it")
        return None
    if not shutil.which("npm"):
        print("!! npm not found: skipping the Express peer")
        return None
    target = tmp / "express-gateway"
    shutil.copytree(peer, target, ignore=shutil.ignore_patterns("node_modules"))
    subprocess.run(
        ["npm", "install", "--no-audit", "--no-fund", "--silent"],
        cwd=target,
        check=True,
        timeout=300,
        capture_output=True,
    )
    return target


def redis_up() -> bool:
    """True when the shared Redis answers."""
    try:
        import redis

        return bool(redis.Redis(socket_timeout=1).ping())
    except Exception:
        return False


def me_ratio(duration: int, connections: int, rounds: int) -> None:
    """GET /api/v1/auth/me on the real auth service, direct vs through the gateway."""
    tmp = Path(tempfile.mkdtemp(prefix="gwbench-me-"))
    stack = Stack()
    runs: dict[str, list[dict]] = {"auth direct": [], "through gateway": []}
    try:
        auth_port = free_port()
        auth = f"http://127.0.0.1:{auth_port}"
        auth_env = {
            "AUTH_PORT": str(auth_port),
            "DATABASE_URL": f"sqlite:///{tmp / 'auth.db'}",
            "AUTHGATE_VAR_DIR": str(tmp / "var"),
            # Only /me is measured: cheap bcrypt just makes the set-up quick.
            "BCRYPT_ROUNDS": "4",
            "REDIS_URL": "",
            "WEB_CONCURRENCY": os.environ.get("WEB_CONCURRENCY", "2"),
            "GUNICORN_LOG_LEVEL": "warning",
            "PYTHONPATH": str(REPO),
        }
        subprocess.run(
            [sys.executable, "-m", "auth_service.cli", "migrate"],
            cwd=REPO,
            env={**os.environ, **auth_env},
            check=True,
            capture_output=True,
            timeout=120,
        )
        stack.start(
            [str(BIN / "gunicorn"), "-c", str(REPO / "deploy/gunicorn_auth.conf.py")],
            auth_env,
            f"{auth}/healthz",
        )
        email = f"bench-{uuid.uuid4().hex[:10]}@example.com"
        password = secrets.token_urlsafe(16)
        created = requests.post(
            f"{auth}/api/v1/auth/register",
            json={"email": email, "password": password, "full_name": "Bench"},
            timeout=10,
        )
        assert created.status_code == 201, created.text[:200]
        login = requests.post(
            f"{auth}/api/v1/auth/login", json={"email": email, "password": password}, timeout=10
        )
        assert login.status_code == 200, login.text[:200]
        token = login.json()["access_token"]

        gw_port = free_port()
        stack.start(
            [str(BIN / "gunicorn"), "-c", str(REPO / "deploy/gunicorn_gateway.conf.py")],
            gateway_env(gw_port, auth),
            f"http://127.0.0.1:{gw_port}/healthz",
        )
        targets = {
            "auth direct": f"{auth}/api/v1/auth/me",
            "through gateway": f"http://127.0.0.1:{gw_port}/api/v1/auth/me",
        }
        for name, url in targets.items():
            check = requests.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=5)
            assert check.status_code == 200, (name, check.status_code, check.text[:200])
            wrk(url, token, connections, 2)  # warm-up
        for _ in range(rounds):
            for name, url in targets.items():
                runs[name].append(wrk(url, token, connections, duration))
    finally:
        stack.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)
    results = {name: median_run(r) for name, r in runs.items()}
    print(
        f"\nGET /api/v1/auth/me, real auth service (SQLite), wrk {connections} connections "
        f"(cores: {os.cpu_count()}; median of {rounds} interleaved rounds of {duration} s)"
    )
    print(f"{'target':<18}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'non-2xx':>9}")
    for name, r in results.items():
        print(f"{name:<18}{r['rps']:>10.0f}{r['p50']:>9.2f}{r['p99']:>9.2f}{r['non2xx']:>9}")
    direct, through = results["auth direct"], results["through gateway"]
    print(
        f"  through the gateway / direct: throughput {through['rps'] / direct['rps']:.2f}x, "
        f"p50 +{through['p50'] - direct['p50']:.2f} ms"
    )


def main() -> None:
    """Run every configuration and print the table and ratios."""
    parser = argparse.ArgumentParser()
    # NOTE: wrk runs stay at 5 s or less; a shared small machine is noisy either way, so
    # rounds are interleaved and the median kept.
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--single-duration", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only-me", action="store_true", help="just the /auth/me ratio")
    parser.add_argument(
        "--peer-dir",
        type=Path,
        default=Path(os.environ[PEER_ENV]) if os.environ.get(PEER_ENV) else None,
        help=f"the Express peer's directory (default: ${PEER_ENV}; none: peer skipped)",
    )
    args = parser.parse_args()
    if args.only_me:
        me_ratio(args.duration, args.connections, args.rounds)
        return
    tmp = Path(tempfile.mkdtemp(prefix="gwbench-"))
    token, public_pem, jwks = make_key(tmp)
    stack = Stack()
    results: dict[str, dict] = {}
    single: dict[str, dict] = {}
    try:
        upstream = stack.start_fixed_upstream(jwks, threads=16)
        targets = {"direct": upstream}

        ours = free_port()
        stack.start(
            [str(BIN / "gunicorn"), "-c", str(REPO / "deploy/gunicorn_gateway.conf.py")],
            gateway_env(ours, upstream),
            f"http://127.0.0.1:{ours}/healthz",
        )
        targets["gateway (memory)"] = f"http://127.0.0.1:{ours}"

        if redis_up():
            ours_redis = free_port()
            prefix = f"bench:{uuid.uuid4().hex}:rl:"
            stack.start(
                [str(BIN / "gunicorn"), "-c", str(REPO / "deploy/gunicorn_gateway.conf.py")],
                gateway_env(
                    ours_redis,
                    upstream,
                    REDIS_URL="redis://127.0.0.1:6379/0",
                    GATEWAY_RATE_LIMIT_KEY_PREFIX=prefix,
                ),
                f"http://127.0.0.1:{ours_redis}/healthz",
            )
            targets["gateway (redis)"] = f"http://127.0.0.1:{ours_redis}"
        else:
            print("!! Redis on 127.0.0.1:6379 unreachable: skipping the Redis run")

        peer_dir = install_peer(args.peer_dir, tmp)
        if peer_dir is not None:
            express = free_port()
            stack.start(
                ["node", "server.js"],
                {
                    "PORT": str(express),
                    "UPSTREAM": upstream,
                    "JWT_PUBLIC_KEY": public_pem,
                    "JWT_ISSUER": "authgate",
                    "JWT_AUDIENCE": "authgate-api",
                    "NODE_ENV": "production",
                },
                f"http://127.0.0.1:{express}/healthz",
                cwd=peer_dir,
            )
            targets["express peer"] = f"http://127.0.0.1:{express}"

        for name, base in targets.items():
            url = base + TARGET
            check = requests.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=5)
            assert check.status_code == 200, (name, check.status_code, check.text[:200])
            wrk(url, token, args.connections, 2)  # warm-up
        # NOTE: rounds interleave the targets and the median is kept: on a small shared
        # machine one run of one target can be off by a third.
        runs: dict[str, list[dict]] = {name: [] for name in targets}
        singles: dict[str, list[dict]] = {name: [] for name in targets}
        for _ in range(args.rounds):
            for name, base in targets.items():
                runs[name].append(wrk(base + TARGET, token, args.connections, args.duration))
                singles[name].append(wrk(base + TARGET, token, 1, args.single_duration, 1))
        results = {name: median_run(r) for name, r in runs.items()}
        single = {name: median_run(r) for name, r in singles.items()}
    finally:
        stack.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)
    report(results, single, args.connections)
    me_ratio(args.duration, args.connections, args.rounds)


def report(results: dict[str, dict], single: dict[str, dict], connections: int) -> None:
    """Print the figures and the ratios the targets are stated in."""
    print(
        f"\nToken-checked GET {TARGET}, wrk {connections} connections "
        f"(cores: {os.cpu_count()}; median of interleaved rounds)"
    )
    print(f"{'target':<18}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'1-conn p50':>12}{'non-2xx':>9}")
    for name, r in results.items():
        print(
            f"{name:<18}{r['rps']:>10.0f}{r['p50']:>9.2f}{r['p99']:>9.2f}"
            f"{single[name]['p50']:>12.3f}{r['non2xx'] + single[name]['non2xx']:>9}"
        )
    direct = results.get("direct")
    express = results.get("express peer")
    express_added = None
    if express and direct:
        express_added = single["express peer"]["p50"] - single["direct"]["p50"]
        print(
            f"\nexpress peer: vs direct {express['rps'] / direct['rps']:.2f}x, "
            f"added p50 1 connection {express_added:.3f} ms"
        )
    elif not express:
        print("\n(no Express peer in this run: the targets against it are not checked)")
    for name, floor in (("gateway (memory)", 1.0), ("gateway (redis)", 0.9)):
        if name not in results:
            continue
        ours = results[name]
        print(f"\n{name}:")
        if direct:
            print(f"  throughput vs direct      {ours['rps'] / direct['rps']:.2f}x")
            added = single[name]["p50"] - single["direct"]["p50"]
            bound = "" if express_added is None else f"   (target <= Express's {express_added:.3f})"
            print(f"  added p50, 1 connection   {added:.3f} ms{bound}")
        if express:
            print(
                f"  throughput vs Express     {ours['rps'] / express['rps']:.2f}x   "
                f"(target >= {floor:.1f}x)"
            )


if __name__ == "__main__":
    main()
