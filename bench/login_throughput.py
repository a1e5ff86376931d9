"""Login throughput under gunicorn against the bcrypt bound (README, "Performance").

Login is bound by bcrypt: with W worker cores and one bcrypt check taking t seconds, no
server can log in more than W / t users per second. This script measures t in this
run, starts the auth service under gunicorn (one sync-ish worker per core, SQLite or
$BENCH_DATABASE_URL), drives logins for a fixed time from client threads over loopback,
and prints the achieved rate as a fraction of that bound (target: at least 0.85).

With --mfa every user has a TOTP second factor: a login is the password step (401
mfa-required, one bcrypt check) plus login_mfa with a real code from pyotp (no bcrypt),
so the bound is the same and the ratio shows what the second step costs. A TOTP code is
accepted once per user and 30-second step, so the run logs in a pool of enrolled users.

    .venv/bin/python bench/login_throughput.py [--seconds 15] [--rounds 12] [--mfa]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import bcrypt
import pyotp
import requests

REPO = Path(__file__).resolve().parent.parent


def _timed_check(hashed: bytes) -> float:
    started = time.perf_counter()
    bcrypt.checkpw(b"benchmark password", hashed)
    return time.perf_counter() - started


def bcrypt_seconds(rounds: int, samples: int = 5) -> float:
    """Median seconds of one bcrypt check at `rounds`, measured now."""
    hashed = bcrypt.hashpw(b"benchmark password", bcrypt.gensalt(rounds))
    return statistics.median(_timed_check(hashed) for _ in range(samples))


def parallel_bcrypt_rate(processes: int, rounds: int, checks: int) -> float:
    """bcrypt checks per second from `processes` processes at once: the cores really free.

    NOTE: on a shared or busy machine `cores / one check` overstates what is available;
    this second bound shows how much of a shortfall is the machine's, not the server's.
    """
    hashed = bcrypt.hashpw(b"benchmark password", bcrypt.gensalt(rounds))
    with ProcessPoolExecutor(processes) as pool:
        list(pool.map(_timed_check, [hashed] * processes))  # start the processes
        started = time.perf_counter()
        list(pool.map(_timed_check, [hashed] * checks))
        return checks / (time.perf_counter() - started)


def start_server(
    workdir: Path, log: Path, port: int, workers: int, rounds: int
) -> subprocess.Popen[bytes]:
    """The auth service under gunicorn, migrated, answering /healthz; its output to `log`."""
    env = {
        **os.environ,
        "DATABASE_URL": os.environ.get("BENCH_DATABASE_URL", f"sqlite:///{workdir / 'auth.db'}"),
        "AUTHGATE_VAR_DIR": str(workdir),
        "BCRYPT_ROUNDS": str(rounds),
        "LOGIN_MAX_FAILURES": "1000",
        "LOGIN_MAX_FAILURES_PER_ACCOUNT": "100000",
        "LOG_FORMAT": "json",
    }
    env.pop("REDIS_URL", None)
    subprocess.run(
        [sys.executable, "-m", "auth_service.cli", "migrate"],
        env=env,
        check=True,
        cwd=REPO,
        stdout=subprocess.DEVNULL,
    )
    # NOTE: a file, not DEVNULL: register() shows it when registration fails.
    with log.open("wb") as output:
        server = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "gunicorn"),
                "--workers",
                str(workers),
                "--worker-class",
                "gthread",
                "--threads",
                "2",
                "--bind",
                f"127.0.0.1:{port}",
                "--log-level",
                "warning",
                "auth_service.wsgi:app",
            ],
            env=env,
            cwd=REPO,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and server.poll() is None:
        try:
            if requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1).ok:
                return server
        except requests.RequestException:
            time.sleep(0.2)
    server.kill()
    print(log.read_text(errors="replace")[-3000:], file=sys.stderr)
    raise SystemExit(f"the auth service did not start; is port {port} free?")


CREDENTIALS = {"email": "bench@example.com", "password": "benchmark password"}


def register(base: str, log: Path) -> None:
    """Create the benchmark user."""
    response = requests.post(f"{base}/api/v1/auth/register", json=CREDENTIALS, timeout=30)
    if response.status_code != 201:
        print(log.read_text()[-3000:], file=sys.stderr)
        raise SystemExit(f"registration failed: {response.status_code} {response.text}")


LoginOnce = Callable[[requests.Session], bool]


def password_login(base: str) -> LoginOnce:
    """One login of the benchmark user with its password."""

    def login(session: requests.Session) -> bool:
        return session.post(f"{base}/api/v1/auth/login", json=CREDENTIALS, timeout=30).ok

    return login


def drive_logins(login: LoginOnce, seconds: float, clients: int) -> tuple[int, int]:
    """Log in from `clients` threads for `seconds`; (successes, failures)."""
    counts = {"ok": 0, "failed": 0}
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds

    def client() -> None:
        with requests.Session() as session:
            while time.monotonic() < stop_at:
                ok = login(session)
                with lock:
                    counts["ok" if ok else "failed"] += 1

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return counts["ok"], counts["failed"]


@dataclass
class MfaUser:
    """An enrolled user and the last TOTP step the benchmark spent for it."""

    email: str
    totp: pyotp.TOTP
    last_step: int


def enrol_user(base: str, index: int) -> MfaUser:
    """Register a user and turn its second factor on (set-up, not measured)."""
    user = {"email": f"bench-mfa-{index}@example.com", "password": CREDENTIALS["password"]}
    requests.post(f"{base}/api/v1/auth/register", json=user, timeout=60).raise_for_status()
    login = requests.post(f"{base}/api/v1/auth/login", json=user, timeout=60)
    login.raise_for_status()
    headers = {"Authorization": f"Bearer {login.json()['access_token']}"}
    started = requests.post(
        f"{base}/api/v1/auth/mfa/totp",
        json={"password": user["password"]},
        headers=headers,
        timeout=60,
    )
    started.raise_for_status()
    totp = pyotp.TOTP(started.json()["secret"])
    step = totp.timecode(time.time())
    requests.post(
        f"{base}/api/v1/auth/mfa/totp/confirm",
        json={"code": totp.generate_otp(step)},
        headers=headers,
        timeout=60,
    ).raise_for_status()
    return MfaUser(user["email"], totp, step)


def mfa_login(base: str, users: list[MfaUser]) -> LoginOnce:
    """One two-step login of the next user that still has an unspent step in the window."""
    ready = deque(users)
    lock = threading.Lock()

    def next_code() -> tuple[str, str] | None:
        with lock:
            for _ in range(len(ready)):
                user = ready.popleft()
                ready.append(user)
                now = user.totp.timecode(time.time())
                # The service accepts steps now-1 .. now+1, each once, in increasing order.
                step = max(user.last_step + 1, now - 1)
                if step <= now + 1:
                    user.last_step = step
                    return user.email, user.totp.generate_otp(step)
        return None

    def login(session: requests.Session) -> bool:
        ticket = next_code()
        if ticket is None:
            return False  # the pool is too small for this rate: counted as a failure
        email, code = ticket
        first = session.post(
            f"{base}/api/v1/auth/login",
            json={"email": email, "password": CREDENTIALS["password"]},
            timeout=30,
        )
        if first.status_code != 401 or "mfa_token" not in first.json():
            return False
        second = session.post(
            f"{base}/api/v1/auth/login/mfa",
            json={"mfa_token": first.json()["mfa_token"], "code": code},
            timeout=30,
        )
        return second.ok

    return login


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--port", type=int, default=18701)
    parser.add_argument("--mfa", action="store_true", help="every user has a TOTP factor")
    args = parser.parse_args()

    cores = os.cpu_count() or 1
    one_check = bcrypt_seconds(args.rounds)
    bound = cores / one_check
    print(
        f"bcrypt check at {args.rounds} rounds: {one_check * 1e3:.1f} ms; "
        f"bound with {cores} cores: {bound:.2f} logins/s"
    )
    with tempfile.TemporaryDirectory(prefix="bench-login-") as tmp:
        log = Path(tmp) / "gunicorn.log"
        server = start_server(Path(tmp), log, args.port, cores, args.rounds)
        try:
            base = f"http://127.0.0.1:{args.port}"
            if args.mfa:
                # Each user logs in at most 3 times at once, then once per 30 s step.
                count = int(bound * (args.seconds + 2) / 2) + cores * 4
                with ThreadPoolExecutor(cores * 2) as pool:
                    users = list(pool.map(lambda i: enrol_user(base, i), range(count)))
                login = mfa_login(base, users)
            else:
                register(base, log)
                login = password_login(base)
            drive_logins(login, 2, cores * 2)  # warm up
            started = time.monotonic()
            ok, failed = drive_logins(login, args.seconds, cores * 2)
            rate = ok / (time.monotonic() - started)
        finally:
            server.terminate()
            server.wait(timeout=30)
    measured = parallel_bcrypt_rate(cores, args.rounds, checks=cores * 6)
    kind = "two-step logins (password + TOTP)" if args.mfa else "logins"
    print(f"achieved: {rate:.2f} {kind}/s ({ok} ok, {failed} failed in {args.seconds:.0f} s)")
    print(f"ratio to the bcrypt bound (cores / one check): {rate / bound:.2f} (target >= 0.85)")
    print(
        f"ratio to {cores} bcrypt processes measured just now ({measured:.2f} checks/s): "
        f"{rate / measured:.2f}"
    )


if __name__ == "__main__":
    main()
