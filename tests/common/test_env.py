"""authgate_common.env: one reader of environment variables for every setting."""

from __future__ import annotations

import ipaddress

import pytest

from authgate_common.env import EnvError, EnvReader


class AppSettingsError(EnvError):
    """A service's own error type, as each service passes it in."""


def reader(**environ: str) -> EnvReader:
    return EnvReader(environ, AppSettingsError)


def test_blank_values_count_as_unset() -> None:
    env = reader(A="  ", B="", C=" value ")
    assert env.optional("A") is None
    assert env.text("B", "fallback") == "fallback"
    assert env.text("C", "fallback") == "value"
    assert env.integer("A", 7, minimum=0, maximum=9) == 7
    assert env.boolean("B", True) is True
    assert env.csv("A", ("x",)) == ("x",)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("1", True), ("TRUE", True), ("yes", True), ("On", True), ("0", False), ("off", False)],
)
def test_flags(raw: str, expected: bool) -> None:
    assert reader(FLAG=raw).boolean("FLAG", not expected) is expected


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda env: env.integer("N", 1, minimum=0, maximum=5), "N: expected an integer"),
        (lambda env: env.integer("BIG", 1, minimum=0, maximum=5), "BIG: must be between 0 and 5"),
        (lambda env: env.number("N", 1.0, minimum=0.0), "N: expected a number"),
        (lambda env: env.number("NAN", 1.0, minimum=0.0), "NAN: must be a finite number"),
        (lambda env: env.number("INF", 1.0, minimum=0.0), "INF: must be a finite number"),
        (lambda env: env.boolean("N", True), "N: expected true or false"),
        (lambda env: env.choice("N", "a", ("a", "b")), "N: must be one of a, b"),
        (lambda env: env.networks("NETS"), "NETS: expected comma-separated IP"),
    ],
)
def test_errors_name_the_variable_and_use_the_callers_type(call, message: str) -> None:  # type: ignore[no-untyped-def]
    env = reader(N="abc", BIG="6", NAN="nan", INF="inf", NETS="10.0.0.0/8, nonsense")
    with pytest.raises(AppSettingsError) as caught:
        call(env)
    assert str(caught.value).startswith(message)


def test_lists_and_networks() -> None:
    env = reader(L=" a, ,b ,c ", NETS="10.0.0.1/8, ::1")
    assert env.csv("L") == ("a", "b", "c")
    assert env.networks("NETS") == (
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("::1/128"),
    )
    assert env.networks("UNSET") == ()


def test_the_default_error_type() -> None:
    with pytest.raises(EnvError, match=r"^X: expected an integer"):
        EnvReader({"X": "1.5"}).integer("X", 1, minimum=0, maximum=2)


def test_an_empty_environment_gives_each_services_field_defaults() -> None:
    """Defaults are written once, on the settings fields: from_env adds none of its own."""
    from auth_service.settings import Settings as AuthSettings
    from gateway_service.settings import Settings as GatewaySettings

    assert AuthSettings.from_env({}) == AuthSettings()
    assert GatewaySettings.from_env({}) == GatewaySettings()


def test_both_services_name_the_bad_variable() -> None:
    from auth_service.settings import Settings as AuthSettings
    from auth_service.settings import SettingsError as AuthSettingsError
    from gateway_service.settings import Settings as GatewaySettings
    from gateway_service.settings import SettingsError as GatewaySettingsError

    with pytest.raises(AuthSettingsError, match=r"^AUTH_PORT: expected an integer"):
        AuthSettings.from_env({"AUTH_PORT": "80a"})
    with pytest.raises(GatewaySettingsError, match=r"^GATEWAY_PORT: expected an integer"):
        GatewaySettings.from_env({"GATEWAY_PORT": "80a"})
