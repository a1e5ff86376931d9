"""gateway_service/discovery.py: an upstream name's addresses, in turn, skipping refusals.

The resolver is the one stand-in: a plain function playing DNS (this host's resolver
gives `localhost` a single address, so a multi-address name cannot be had on loopback);
the compose stack test scales auth to several replicas for the real thing. The clock is
a counter the test moves, so nothing here depends on timing.
"""

from __future__ import annotations

from collections import Counter

import pytest

from gateway_service.discovery import (
    AddressBook,
    address_book_for,
    resolve_all,
    url_with_address,
)

REPLICAS = ["10.0.0.1", "10.0.0.2", "10.0.0.3"]


class Dns:
    """Answers for one name; counts lookups; can fail like a resolver does."""

    def __init__(self, answer: list[str]) -> None:
        self.answer = answer
        self.lookups = 0
        self.down = False

    def __call__(self, host: str, port: int) -> list[str]:
        self.lookups += 1
        if self.down:
            raise OSError("Temporary failure in name resolution")
        return list(self.answer)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def book(dns: Dns, clock: Clock, refresh: float = 5.0, retry: float = 10.0) -> AddressBook:
    return AddressBook("auth", 8001, refresh, retry, resolver=dns, clock=clock)


def picks(addresses: AddressBook, n: int) -> Counter[str]:
    return Counter(addresses.next_address() for _ in range(n))


def test_requests_are_spread_over_every_address() -> None:
    addresses = book(Dns(REPLICAS), Clock())
    assert picks(addresses, 30) == {address: 10 for address in REPLICAS}


def test_a_refusing_address_is_skipped_until_its_pause_ends() -> None:
    clock = Clock()
    addresses = book(Dns(REPLICAS), clock, refresh=1000.0, retry=10.0)
    addresses.mark_failed("10.0.0.2")
    assert picks(addresses, 20) == {"10.0.0.1": 10, "10.0.0.3": 10}
    clock.now += 9.9
    assert "10.0.0.2" not in picks(addresses, 10)
    clock.now += 0.2
    assert picks(addresses, 30)["10.0.0.2"] == 10


def test_an_address_that_answered_is_used_again_at_once() -> None:
    addresses = book(Dns(REPLICAS), Clock())
    addresses.mark_failed("10.0.0.1")
    addresses.mark_ok("10.0.0.1")
    assert picks(addresses, 30)["10.0.0.1"] == 10


def test_with_every_address_refusing_the_earliest_to_recover_is_tried() -> None:
    clock = Clock()
    addresses = book(Dns(REPLICAS[:2]), clock)
    addresses.mark_failed("10.0.0.1")
    clock.now += 1
    addresses.mark_failed("10.0.0.2")
    assert picks(addresses, 4) == {"10.0.0.1": 4}


def test_names_are_re_resolved_every_refresh_interval() -> None:
    dns, clock = Dns(REPLICAS[:1]), Clock()
    addresses = book(dns, clock, refresh=5.0)
    assert picks(addresses, 3) == {"10.0.0.1": 3}
    assert dns.lookups == 1
    dns.answer = REPLICAS  # scaled out
    clock.now += 4.9
    assert picks(addresses, 3) == {"10.0.0.1": 3}
    assert dns.lookups == 1
    clock.now += 0.1
    assert picks(addresses, 30) == {address: 10 for address in REPLICAS}
    assert dns.lookups == 2


def test_a_failed_lookup_keeps_the_known_addresses() -> None:
    dns, clock = Dns(REPLICAS), Clock()
    addresses = book(dns, clock, refresh=5.0)
    addresses.next_address()
    dns.down = True
    clock.now += 5
    assert set(picks(addresses, 9)) == set(REPLICAS)
    assert dns.lookups == 2


def test_without_any_answer_the_name_itself_is_used() -> None:
    dns = Dns([])
    dns.down = True
    assert book(dns, Clock()).next_address() == "auth"


def test_a_removed_address_forgets_its_failure() -> None:
    dns, clock = Dns(REPLICAS), Clock()
    addresses = book(dns, clock, refresh=5.0, retry=100.0)
    addresses.mark_failed("10.0.0.3")
    dns.answer = REPLICAS[:2]
    clock.now += 5
    assert picks(addresses, 4) == {"10.0.0.1": 2, "10.0.0.2": 2}
    dns.answer = REPLICAS  # the replica came back with the same address
    clock.now += 5
    assert picks(addresses, 30)["10.0.0.3"] == 10


def test_the_system_resolver_answers_for_localhost() -> None:
    assert "127.0.0.1" in resolve_all("localhost", 80)
    assert resolve_all("127.0.0.1", 80) == ["127.0.0.1"]


@pytest.mark.parametrize(
    ("url", "address", "want"),
    [
        ("http://auth:8001", "10.0.0.1", "http://10.0.0.1:8001"),
        ("http://auth:8001/base", "fd00::5", "http://[fd00::5]:8001/base"),
        ("http://auth", "10.0.0.1", "http://10.0.0.1"),
    ],
)
def test_url_with_address(url: str, address: str, want: str) -> None:
    assert url_with_address(url, address) == want


@pytest.mark.parametrize(
    ("url", "refresh", "applies"),
    [
        ("http://auth:8001", 5.0, True),
        ("http://auth:8001", 0.0, False),  # off
        ("https://auth:8001", 5.0, False),  # certificates name the host
        ("http://127.0.0.1:8001", 5.0, False),  # one address already
        ("http://[::1]:8001", 5.0, False),
    ],
)
def test_address_book_applies_to_named_http_upstreams(
    url: str, refresh: float, applies: bool
) -> None:
    assert (address_book_for(url, refresh, 30.0) is not None) is applies
