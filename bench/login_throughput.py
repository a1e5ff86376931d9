"""Login throughput under gunicorn against the bcrypt bound (README, "Performance").

Login is bound by bcrypt: with W worker cores and one bcrypt check taking t seconds, no
server can log in more than W / t users per second. This script measures t in this
run, starts the auth service under gunicorn (one sync-ish worker per core, SQLite or
$BENCH_DATABASE_URL), drives logins for a fixed time from client threads over loopback,
and prints the achieved rate as a fraction of that bound (target: at least 0.85).

    .venv/bin/python bench/login_throughput.py [--seconds 15] [--rounds 12]
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
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import bcrypt
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


def drive_logins(base: str, seconds: float, clients: int) -> tuple[int, int]:
    """Log in from `clients` threads for `seconds`; (successes, failures)."""
    counts = {"ok": 0, "failed": 0}
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds

    def client() -> None:
        with requests.Session() as session:
            while time.monotonic() < stop_at:
                ok = session.post(f"{base}/api/v1/auth/login", json=CREDENTIALS, timeout=30).ok
                with lock:
                    counts["ok" if ok else "failed"] += 1

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return counts["ok"], counts["failed"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--port", type=int, default=18701)
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
            register(base, log)
            drive_logins(base, 2, cores * 2)  # warm up
            started = time.monotonic()
            ok, failed = drive_logins(base, args.seconds, cores * 2)
            rate = ok / (time.monotonic() - started)
        finally:
            server.terminate()
            server.wait(timeout=30)
    measured = parallel_bcrypt_rate(cores, args.rounds, checks=cores * 6)
    print(f"achieved: {rate:.2f} logins/s ({ok} ok, {failed} failed in {args.seconds:.0f} s)")
    print(f"ratio to the bcrypt bound (cores / one check): {rate / bound:.2f} (target >= 0.85)")
    print(
        f"ratio to {cores} bcrypt processes measured just now ({measured:.2f} checks/s): "
        f"{rate / measured:.2f}"
    )


if __name__ == "__main__":
    main()
