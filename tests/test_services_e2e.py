"""The bundled services on real PostgreSQL, Redis and RabbitMQ, through the gateway, in both modes:
RabbitMQ hub with a database per service (POC-3) and Redis hub with one shared database (POC-2)."""

from __future__ import annotations

import base64
import json
import time
import uuid
import warnings
from collections.abc import Iterator
from typing import Any

import httpx
import jwt
import pytest

from tests.stack import ADMIN, STACK_SECRETS, Stack, poll, running_stack

SECRET = STACK_SECRETS["ITEST_JWT_SECRET"]


@pytest.fixture(scope="module", params=[("rabbitmq", "per-service"), ("redis", "shared")], ids=["rabbitmq", "redis"])
def stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    hub, layout = request.param
    with running_stack(tmp_path_factory.mktemp(hub), hub=hub, layout=layout) as s:
        yield s


def _user(client: httpx.Client, email: str | None = None) -> tuple[str, dict[str, str]]:
    email = email or f"user-{uuid.uuid4().hex[:10]}@example.com"
    created = client.post("/api/auth/register", json={"email": email, "password": "correct horse", "name": "Ada"})
    assert created.status_code == 201, created.text
    login = client.post("/api/auth/login", json={"email": email, "password": "correct horse"})
    assert login.status_code == 200, login.text
    return created.json()["user"]["id"], {"Authorization": f"Bearer {login.json()['access_token']}"}


def _profile(client: httpx.Client, headers: dict[str, str]) -> httpx.Response | None:
    response = client.get("/api/profile/me", headers=headers)
    return response if response.status_code == 200 else None


def test_end_to_end_user_flow(stack: Stack) -> None:
    with stack.client() as gw:
        user_id, auth = _user(gw)
        # The profile appears once profile has consumed user.registered.
        profile = poll(lambda: _profile(gw, auth))
        assert isinstance(profile, httpx.Response), "profile was not created from user.registered"
        assert profile.json()["profile"]["display_name"] == "Ada"
        assert gw.get("/api/profile/me", headers=auth).headers["x-cache"] == "hit"
        updated = gw.put("/api/profile/me", json={"display_name": "Ada L.", "bio": "math"}, headers=auth)
        assert updated.status_code == 200
        after = gw.get("/api/profile/me", headers=auth)
        assert (after.headers["x-cache"], after.json()["profile"]["display_name"]) == ("miss", "Ada L.")

        key = {"Idempotency-Key": uuid.uuid4().hex}
        first = gw.post("/api/payments", json={"amount": 1999, "currency": "EUR"}, headers={**auth, **key})
        retry = gw.post("/api/payments", json={"amount": 1999, "currency": "EUR"}, headers={**auth, **key})
        assert (first.status_code, retry.status_code) == (201, 200)
        assert first.json()["payment"]["id"] == retry.json()["payment"]["id"]
        mine = gw.get("/api/payments", headers=auth).json()["payments"]
        assert [p["id"] for p in mine] == [first.json()["payment"]["id"]]
        assert gw.get(f"/api/payments/{mine[0]['id']}", headers=auth).json()["payment"]["amount"] == 1999

        _, admin = _admin(gw)

        def seen() -> set[str] | None:
            events = gw.get("/api/admin/events", params={"limit": 500}, headers=admin).json()["events"]
            mine = {e["type"] for e in events if e["data"].get("user_id") == user_id}
            return mine if {"user.registered", "payment.created"} <= mine else None

        assert poll(seen) == {"user.registered", "payment.created"}
        stats = gw.get("/api/admin/stats", headers=admin).json()
        assert stats["by_type"]["payment.created"] >= 1
        assert gw.get("/api/admin/events", headers=auth).status_code == 403


_ADMIN_TOKEN: dict[int, dict[str, str]] = {}


def _admin(client: httpx.Client) -> tuple[str, dict[str, str]]:
    key = id(client.base_url)
    if key not in _ADMIN_TOKEN:
        registered = client.post("/api/auth/register", json={"email": ADMIN, "password": "admin password"})
        assert registered.status_code in (201, 409)
        token = client.post("/api/auth/login", json={"email": ADMIN, "password": "admin password"}).json()
        _ADMIN_TOKEN[key] = {"Authorization": f"Bearer {token['access_token']}"}
    return "", _ADMIN_TOKEN[key]


def test_idempotency_key_with_another_request_is_refused(stack: Stack) -> None:
    with stack.client() as gw:
        _, auth = _user(gw)
        key = {"Idempotency-Key": "same-key"}
        assert (
            gw.post("/api/payments", json={"amount": 5, "currency": "USD"}, headers={**auth, **key}).status_code == 201
        )
        other = gw.post("/api/payments", json={"amount": 6, "currency": "USD"}, headers={**auth, **key})
        assert other.status_code == 409
        assert len(gw.get("/api/payments", headers=auth).json()["payments"]) == 1


@pytest.mark.parametrize(
    ("body", "status"),
    [({"amount": 0, "currency": "EUR"}, 422), ({"amount": 1.5, "currency": "EUR"}, 422),
     ({"amount": 100, "currency": "euro"}, 422), ({"amount": 100, "currency": "EUR"}, 201)],
)  # fmt: skip
def test_payment_validation(stack: Stack, body: dict[str, Any], status: int) -> None:
    with stack.client() as gw:
        _, auth = _user(gw)
        assert gw.post("/api/payments", json=body, headers=auth).status_code == status


def test_refresh_rotates_and_detects_reuse(stack: Stack) -> None:
    with stack.client() as gw:
        email = f"r-{uuid.uuid4().hex[:8]}@example.com"
        gw.post("/api/auth/register", json={"email": email, "password": "password 1"})
        tokens = gw.post("/api/auth/login", json={"email": email, "password": "password 1"}).json()
        rotated = gw.post("/api/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
        assert rotated.status_code == 200
        newer = rotated.json()
        assert newer["refresh_token"] != tokens["refresh_token"]
        assert gw.get("/api/auth/me", headers={"Authorization": f"Bearer {newer['access_token']}"}).status_code == 200
        reuse = gw.post("/api/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
        assert reuse.status_code == 401
        assert "reuse" in reuse.json()["error"]
        # The whole family is revoked: the legitimate newer token no longer works either.
        assert gw.post("/api/auth/refresh", json={"refresh_token": newer["refresh_token"]}).status_code == 401
        assert gw.post("/api/auth/login", json={"email": email, "password": "wrong password"}).status_code == 401


def test_logout_revokes_the_refresh_token(stack: Stack) -> None:
    with stack.client() as gw:
        email = f"l-{uuid.uuid4().hex[:8]}@example.com"
        gw.post("/api/auth/register", json={"email": email, "password": "password 1"})
        tokens = gw.post("/api/auth/login", json={"email": email, "password": "password 1"}).json()
        assert gw.post("/api/auth/logout", json={"refresh_token": tokens["refresh_token"]}).status_code == 204
        assert gw.post("/api/auth/refresh", json={"refresh_token": tokens["refresh_token"]}).status_code == 401


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def _hs512(claims: dict[str, Any]) -> str:
    with warnings.catch_warnings():  # PyJWT warns that the key is short for SHA-512; that is not the point here
        warnings.simplefilter("ignore")
        return jwt.encode(claims, SECRET, algorithm="HS512")


def _bad_tokens() -> dict[str, str]:
    now = int(time.time())
    claims = {
        "sub": str(uuid.uuid4()),
        "email": "x@example.com",
        "role": "user",
        "type": "access",
        "iat": now,
    }
    valid = jwt.encode({**claims, "exp": now + 600}, SECRET, algorithm="HS256")
    head, _, sig = valid.split(".")
    return {
        "expired": jwt.encode({**claims, "iat": now - 7200, "exp": now - 3600}, SECRET, algorithm="HS256"),
        "alg-none": f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64({**claims, 'exp': now + 600})}.",
        "wrong-secret": jwt.encode(
            {**claims, "exp": now + 600}, "another-secret-0123456789abcdef0123", algorithm="HS256"
        ),
        "missing-exp": jwt.encode(claims, SECRET, algorithm="HS256"),
        "tampered": f"{head}.{_b64({**claims, 'role': 'admin', 'exp': now + 600})}.{sig}",
        "other-algorithm": _hs512({**claims, "exp": now + 600}),
        "garbage": "not-a-jwt",
    }


@pytest.mark.parametrize("case", list(_bad_tokens()))
def test_bad_tokens_get_401_at_the_gateway_and_the_service(stack: Stack, case: str) -> None:
    token = _bad_tokens()[case]
    headers = {"Authorization": f"Bearer {token}"}
    with stack.client() as gw, stack.client("admin") as admin:
        refused = gw.get("/api/profile/me", headers=headers)
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"].startswith("Bearer")
        assert admin.get("/api/admin/stats", headers=headers).status_code == 401


def test_missing_token_is_401(stack: Stack) -> None:
    with stack.client() as gw:
        assert gw.get("/api/payments").status_code == 401


def test_request_id_is_propagated_or_created(stack: Stack) -> None:
    with stack.client() as gw:
        given = gw.get("/api/auth/version", headers={"X-Request-ID": "req-42"})
        assert given.headers["x-request-id"] == "req-42"
        made = gw.get("/api/auth/version").headers["x-request-id"]
        assert len(made) == 32


def test_cors_preflight_and_simple_request(stack: Stack) -> None:
    origin = stack.env.cors_origin
    with stack.client() as gw:
        pre = gw.options("/api/payments", headers={"Origin": origin, "Access-Control-Request-Method": "POST",
                                                   "Access-Control-Request-Headers": "authorization"})  # fmt: skip
        assert pre.status_code == 204
        assert pre.headers["access-control-allow-origin"] == origin
        assert "POST" in pre.headers["access-control-allow-methods"]
        simple = gw.get("/api/auth/version", headers={"Origin": origin})
        assert simple.headers["access-control-allow-origin"] == origin
        other = gw.get("/api/auth/version", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers


def test_streamed_request_body_reaches_the_service(stack: Stack) -> None:
    with stack.client() as gw:
        _, auth = _user(gw)
        poll(lambda: _profile(gw, auth))
        payload = json.dumps({"bio": "x" * 1500}).encode()
        chunks = (payload[i : i + 100] for i in range(0, len(payload), 100))  # no length: sent chunked
        updated = gw.put("/api/profile/me", content=chunks, headers={**auth, "Content-Type": "application/json"})
        assert updated.status_code == 200, updated.text
        assert updated.json()["profile"]["bio"] == "x" * 1500


def test_health_has_the_guides_shape(stack: Stack) -> None:
    expected_rabbit = "healthy" if stack.rabbit is not None else "disabled"
    with stack.client("payments") as svc:
        body = svc.get("/health").json()
    assert set(body) == {"status", "timestamp", "services"}
    assert body["status"] == "healthy"
    assert body["timestamp"].endswith("Z")
    assert body["services"] == {"database": "healthy", "redis": "healthy", "rabbitmq": expected_rabbit}
    with stack.client() as gw:
        gateway = gw.get("/health").json()
    assert gateway["services"] == {
        "admin": "healthy",
        "auth": "healthy",
        "payments": "healthy",
        "profile": "healthy",
    }


def test_unknown_route_is_404(stack: Stack) -> None:
    with stack.client() as gw:
        assert gw.get("/api/billing/x").status_code == 404
