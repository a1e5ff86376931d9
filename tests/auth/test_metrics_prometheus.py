"""GET /metrics: requests by route template, login and refresh outcomes, contract breaches.

In-process tests read one app's own registry; the last test runs the real gunicorn
config with two workers and checks that /metrics sums both workers exactly.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from auth_api import PASSWORD, Api, set_user_flags
from auth_server import fresh_connection, running_auth_service
from falcon import testing
from problem_observer import assert_problem_type, observe
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from auth_service.app import create_app
from auth_service.settings import Settings
from auth_service.spec import Contract
from authgate_common.problem_types import ProblemType

AppFactory = Callable[..., testing.TestClient]
ROOT = Path(__file__).resolve().parents[2]
LOGIN = "/api/v1/auth/login"
REFRESH = "/api/v1/auth/refresh"


def value(text: str, name: str, **labels: str) -> float | None:
    """One sample's value as a scraper reads it; None when the series is absent."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return sample.value
    return None


def scrape(client: testing.TestClient) -> str:
    result = client.simulate_get("/metrics")
    assert result.status_code == 200, result.text
    assert result.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    return result.text


def test_requests_are_counted_by_route_template_not_raw_path(api: Api) -> None:
    user = api.user("alice@example.com")
    auth = {"Authorization": f"Bearer {user['access_token']}"}
    for _ in range(3):
        assert (
            api.client.simulate_get(f"/api/v1/users/{user['id']}", headers=auth).status == "200 OK"
        )
    missing = str(uuid.uuid4())
    assert api.client.simulate_get(f"/api/v1/users/{missing}", headers=auth).status_code in (
        403,
        404,
    )

    text = scrape(api.client)
    route = "/api/v1/users/{user_id}"
    assert value(text, "authgate_requests_total", route=route, method="GET", status="200") == 3
    assert user["id"] not in text and missing not in text
    assert value(text, "authgate_requests_total", route=LOGIN, method="POST", status="200") == 1
    count = value(text, "authgate_request_duration_seconds_count", route=route, method="GET")
    assert count == 4
    total = value(text, "authgate_request_duration_seconds_sum", route=route, method="GET")
    assert total is not None and total > 0


# The test client's WSGI validator warns about the made-up methods, which is the point.
@pytest.mark.filterwarnings("ignore:Unknown REQUEST_METHOD")
def test_unmatched_paths_and_odd_methods_share_bounded_series(client: testing.TestClient) -> None:
    for path in ("/nope", "/api/v1/auth/whatever", f"/x/{uuid.uuid4()}"):
        assert client.simulate_get(path).status_code == 404
    assert client.simulate_request("BREW", "/healthz").status_code in (400, 405)
    assert client.simulate_request("SPAM", "/healthz").status_code in (400, 405)

    text = scrape(client)
    assert (
        value(text, "authgate_requests_total", route="(unmatched)", method="GET", status="404") == 3
    )
    odd = [
        labels
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "authgate_requests_total"
        for labels in [sample.labels]
        if labels["route"] == "/healthz"
    ]
    assert {labels["method"] for labels in odd} == {"_OTHER"}, odd
    assert "BREW" not in text and "SPAM" not in text


def test_login_outcomes_are_counted(make_client: AppFactory, database_url: str) -> None:
    api = Api(make_client(login_max_failures=3))
    api.register("ok@example.com")
    made = api.register("off@example.com")
    set_user_flags(database_url, made.json["id"], is_active=False)

    assert api.login("ok@example.com").status_code == 200
    assert api.login("ok@example.com").status_code == 200
    assert api.login("ok@example.com", "wrong password!").status_code == 401
    assert api.login("nobody@example.com").status_code == 401
    assert api.login("off@example.com").status_code == 403
    for _ in range(3):
        assert api.login("locked@example.com").status_code == 401
    assert api.login("locked@example.com").status_code == 429
    assert api.login("locked@example.com").status_code == 429

    text = scrape(api.client)
    assert value(text, "authgate_logins_total", outcome="success") == 2
    assert value(text, "authgate_logins_total", outcome="bad_credentials") == 5
    assert value(text, "authgate_logins_total", outcome="inactive") == 1
    assert value(text, "authgate_logins_total", outcome="throttled") == 2


def test_outcomes_are_exported_at_zero_before_any_event(client: testing.TestClient) -> None:
    text = scrape(client)
    for outcome in ("success", "bad_credentials", "inactive", "throttled"):
        assert value(text, "authgate_logins_total", outcome=outcome) == 0
    for outcome in ("rotated", "race", "reuse", "invalid"):
        assert value(text, "authgate_refreshes_total", outcome=outcome) == 0


def test_refresh_rotations_races_reuse_and_invalid_are_counted(make_client: AppFactory) -> None:
    api = Api(make_client())
    first = api.user("graceful@example.com")["refresh_token"]
    rotated = api.client.simulate_post(REFRESH, json={"refresh_token": first})
    assert rotated.status_code == 200
    assert api.client.simulate_post(REFRESH, json={"refresh_token": first}).status_code == 409
    second = rotated.json["refresh_token"]
    assert api.client.simulate_post(REFRESH, json={"refresh_token": second}).status_code == 200
    assert api.client.simulate_post(REFRESH, json={"refresh_token": "nope"}).status_code == 401
    text = scrape(api.client)
    assert value(text, "authgate_refreshes_total", outcome="rotated") == 2
    assert value(text, "authgate_refreshes_total", outcome="race") == 1
    assert value(text, "authgate_refreshes_total", outcome="reuse") == 0
    assert value(text, "authgate_refreshes_total", outcome="invalid") == 1

    strict = Api(make_client(refresh_reuse_grace_seconds=0))
    token = strict.user("strict@example.com")["refresh_token"]
    assert strict.client.simulate_post(REFRESH, json={"refresh_token": token}).status_code == 200
    replayed = strict.client.simulate_post(REFRESH, json={"refresh_token": token})
    assert replayed.status_code == 401
    # The client cannot tell reuse from any other invalid token; only the metric can.
    observe(replayed.json, ProblemType.INVALID_REFRESH_TOKEN)
    text = scrape(strict.client)
    assert value(text, "authgate_refreshes_total", outcome="rotated") == 1
    assert value(text, "authgate_refreshes_total", outcome="reuse") == 1
    assert value(text, "authgate_refreshes_total", outcome="invalid") == 0


@pytest.mark.parametrize(("mode", "status"), [("log", 200), ("strict", 500)])
def test_response_contract_breaches_are_counted(
    settings: Settings, contract: Contract, mode: str, status: int
) -> None:
    # A contract that no longer matches the server: /healthz answers {"status": "ok"}.
    document = copy.deepcopy(contract.document)
    document["components"]["schemas"]["Health"]["properties"]["status"]["enum"] = ["fine"]
    settings = Settings(**{**settings.__dict__, "response_validation": mode})
    client = testing.TestClient(create_app(settings, contract=Contract(document)))

    first = client.simulate_get("/healthz")
    assert first.status_code == status
    if mode == "strict":
        assert_problem_type(first, ProblemType.RESPONSE_CONTRACT_VIOLATION)
    assert client.simulate_get("/healthz").status_code == status
    assert client.simulate_get("/readyz").status_code == 200
    text = scrape(client)
    assert value(text, "authgate_response_contract_breaches_total", operation="healthz") == 2
    assert value(text, "authgate_response_contract_breaches_total", operation="readyz") is None


def test_apps_keep_their_own_counts(make_client: AppFactory) -> None:
    one, two = make_client(), make_client()
    one.simulate_get("/healthz")
    text = scrape(two)
    assert (
        value(text, "authgate_requests_total", route="/healthz", method="GET", status="200") is None
    )


# --------------------------------------------------------------------------- gunicorn


@pytest.fixture
def gunicorn_auth(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """Two workers with prometheus_client's multiprocess mode on."""
    metrics_dir = tmp_path / "prometheus"
    with running_auth_service(
        tmp_path, PROMETHEUS_MULTIPROC_DIR=str(metrics_dir), LOGIN_MAX_FAILURES="100"
    ) as base:
        yield base, metrics_dir


def healthz_per_worker(metrics_dir: Path) -> list[float]:
    """/healthz requests counted by each worker, read from that worker's own file."""
    counts = []
    for path in sorted(metrics_dir.glob("counter_*.db")):
        merged = MultiProcessCollector.merge([str(path)], accumulate=True)
        counts.append(
            sum(
                sample.value
                for family in merged
                for sample in family.samples
                if sample.name == "authgate_requests_total" and sample.labels["route"] == "/healthz"
            )
        )
    return counts


@pytest.mark.slow
def test_two_gunicorn_workers_sum_exactly(gunicorn_auth: tuple[str, Path]) -> None:
    base, metrics_dir = gunicorn_auth
    # NOTE: which worker accepts a connection is the kernel's choice, and a fast gthread
    # worker often takes them all; send bursts until both have served some.
    sent = 0
    per_worker: list[float] = []
    with ThreadPoolExecutor(max_workers=16) as pool:
        while sent < 5000:
            burst = list(pool.map(lambda _: fresh_connection("GET", f"{base}/healthz"), range(100)))
            assert [result.status_code for result in burst] == [200] * len(burst)
            sent += len(burst)
            per_worker = healthz_per_worker(metrics_dir)
            if len(per_worker) == 2 and min(per_worker) > 0:
                break
    assert len(per_worker) == 2 and min(per_worker) > 0, f"one worker served all: {per_worker}"
    assert sum(per_worker) == sent

    credentials = {"email": "w@example.com", "password": PASSWORD}
    wrong = {"email": "w@example.com", "password": "not the password"}
    registered = fresh_connection("POST", f"{base}/api/v1/auth/register", json=credentials)
    assert registered.status_code == 201
    good, bad = 7, 3
    with ThreadPoolExecutor(max_workers=4) as pool:
        logins = list(
            pool.map(
                lambda body: fresh_connection("POST", f"{base}{LOGIN}", json=body).status_code,
                [credentials] * good + [wrong] * bad,
            )
        )
    assert logins == [200] * good + [401] * bad

    text = fresh_connection("GET", f"{base}/metrics").text
    healthz = value(text, "authgate_requests_total", route="/healthz", method="GET", status="200")
    assert healthz == sent
    count = value(text, "authgate_request_duration_seconds_count", route="/healthz", method="GET")
    assert count == sent
    assert value(text, "authgate_requests_total", route=LOGIN, method="POST", status="200") == good
    assert value(text, "authgate_requests_total", route=LOGIN, method="POST", status="401") == bad
    assert value(text, "authgate_logins_total", outcome="success") == good
    assert value(text, "authgate_logins_total", outcome="bad_credentials") == bad
    # Per-process collectors would be wrong here (one process's view), so there are none.
    assert value(text, "process_cpu_seconds_total") is None
