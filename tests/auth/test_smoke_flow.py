"""The main path, end to end in-process: register, login, me, refresh, logout."""

from auth_api import Api, bearer


def test_register_login_me_refresh_logout(api: Api) -> None:
    user = api.user("Ada@Example.com ")
    assert user["email"] == "ada@example.com"
    me = api.client.simulate_get("/api/v1/auth/me", headers=bearer(user["access_token"]))
    assert me.status_code == 200
    assert me.json["id"] == user["id"]
    rotated = api.client.simulate_post(
        "/api/v1/auth/refresh", json={"refresh_token": user["refresh_token"]}
    )
    assert rotated.status_code == 200, rotated.text
    assert rotated.headers["cache-control"] == "no-store"
    assert rotated.json["refresh_token"] != user["refresh_token"]
    out = api.client.simulate_post(
        "/api/v1/auth/logout", json={"refresh_token": rotated.json["refresh_token"]}
    )
    assert out.status_code == 204
    after = api.client.simulate_get("/api/v1/auth/me", headers=bearer(rotated.json["access_token"]))
    assert after.status_code == 401
    assert after.headers["www-authenticate"] == 'Bearer error="invalid_token"'
