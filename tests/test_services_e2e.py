"""The bundled services on real PostgreSQL, Redis and RabbitMQ, through the gateway, in both modes:
RabbitMQ hub with a database per service (POC-3) and Redis hub with one shared database (POC-2)."""

from __future__ import annotations

import base64
import http.client
import json
import socket
import time
import uuid
import warnings
from collections.abc import Iterator
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from mfe_deploy.render import Endpoints, environments
from mfe_services.common.tokens import Signer
from tests.stack import STACK_SECRETS, Stack, admin_headers, poll, running_stack

AUTH_KEY = Signer.parse(STACK_SECRETS["ITEST_JWT_KEY"])  # what auth signs with: the test plays auth here


def _signed(claims: dict[str, Any], key: Ed25519PrivateKey = AUTH_KEY.key, kid: str = AUTH_KEY.kid) -> str:
    return jwt.encode(claims, key, algorithm="EdDSA", headers={"kid": kid})


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

        _, admin = _admin(stack, gw)

        def seen() -> set[str] | None:
            events = gw.get("/api/admin/events", params={"limit": 500}, headers=admin).json()["events"]
            mine = {e["type"] for e in events if e["data"].get("user_id") == user_id}
            return mine if {"user.registered", "payment.created"} <= mine else None

        assert poll(seen) == {"user.registered", "payment.created"}
        stats = gw.get("/api/admin/stats", headers=admin).json()
        assert stats["by_type"]["payment.created"] >= 1
        assert gw.get("/api/admin/events", headers=auth).status_code == 403


_ADMIN_TOKEN: dict[int, dict[str, str]] = {}


def _admin(stack: Stack, client: httpx.Client) -> tuple[str, dict[str, str]]:
    key = id(stack)
    if key not in _ADMIN_TOKEN:
        _ADMIN_TOKEN[key] = admin_headers(client, stack.cli, "itest")
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
    [
        ({"amount": 0, "currency": "EUR"}, 422),
        ({"amount": 1.5, "currency": "EUR"}, 422),
        ({"amount": 100, "currency": "euro"}, 422),
        ({"amount": 100, "currency": "EUR"}, 201),
    ],
)
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


def _hmac(claims: dict[str, Any], secret: str, algorithm: str) -> str:
    with warnings.catch_warnings():  # PyJWT warns that the key is short for SHA-512; that is not the point here
        warnings.simplefilter("ignore")
        return jwt.encode(claims, secret, algorithm=algorithm, headers={"kid": AUTH_KEY.kid})


def _bad_tokens() -> dict[str, str]:
    now = int(time.time())
    claims = {
        "sub": str(uuid.uuid4()),
        "email": "x@example.com",
        "role": "user",
        "type": "access",
        "iat": now,
    }
    live = {**claims, "exp": now + 600}
    valid = _signed(live)
    head, _, sig = valid.split(".")
    other = Ed25519PrivateKey.generate()
    public_text = STACK_SECRETS["ITEST_JWT_KEY"]  # what an HMAC confusion attack would try as the secret
    return {
        "expired": _signed({**claims, "iat": now - 7200, "exp": now - 3600}),
        "alg-none": f"{_b64({'alg': 'none', 'typ': 'JWT', 'kid': AUTH_KEY.kid})}.{_b64(live)}.",
        # A token signed by any key but auth's: under auth's kid, under a kid nobody published, without one.
        "another-key-same-kid": _signed(live, other),
        "another-key-unknown-kid": _signed(live, other, "not-published"),
        "no-kid": jwt.encode(live, AUTH_KEY.key, algorithm="EdDSA"),
        "missing-exp": _signed(claims),
        "tampered": f"{head}.{_b64({**claims, 'role': 'admin', 'exp': now + 600})}.{sig}",
        "hs256-the-old-algorithm": _hmac(live, public_text, "HS256"),
        "hs512": _hmac(live, public_text, "HS512"),
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
        pre = gw.options(
            "/api/payments",
            headers={
                "Origin": origin,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization",
            },
        )
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


def _exchange(
    port: int, requests: list[tuple[str, str, dict[str, bytes], bytes]]
) -> list[tuple[int, Any, bytes, bool]]:
    """Sends the requests one after another on one keep-alive connection: (status, headers, body, reused)
    for each, where `reused` says the request went out on the connection the previous answer came on."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    answers = []
    previous = None
    try:
        for method, path, headers, body in requests:
            conn.putrequest(method, path, skip_accept_encoding=True)
            for name, value in {**headers, "Content-Length": str(len(body)).encode()}.items():
                conn.putheader(name, value)
            conn.endheaders(body)
            reused = previous is not None and conn.sock is previous
            response = conn.getresponse()
            answers.append((response.status, response.headers, response.read(), reused))
            previous = conn.sock
    finally:
        conn.close()
    return answers


def _bad_sub_token() -> str:
    now = int(time.time())
    claims = {"sub": "not-a-uuid", "type": "access", "role": "user", "iat": now, "exp": now + 600}
    return _signed(claims)


_JSON = {"Content-Type": b"application/json"}
BAD_INPUT: dict[str, tuple[str, str, str, bytes, int]] = {
    # case: method, path, who (anonymous | user | bad-sub), body, expected status (was a 500)
    "nested-array": ("POST", "/api/auth/login", "anonymous", b"[" * 50_000 + b"]" * 50_000, 400),
    "nested-object": ("POST", "/api/auth/register", "anonymous", b'{"a":' * 3000 + b"1" + b"}" * 3000, 400),
    "nul-in-text": (
        "POST",
        "/api/auth/register",
        "anonymous",
        b'{"email":"nul@x.io","password":"long enough","name":"a\\u0000b"}',
        400,
    ),
    "lone-surrogate": (
        "POST",
        "/api/auth/register",
        "anonymous",
        b'{"email":"s@x.io","password":"long enough","name":"\\ud800"}',
        400,
    ),
    "nul-in-email": ("POST", "/api/auth/login", "anonymous", b'{"email":"a\\u0000@x.io","password":"x"}', 400),
    "currency-newline": ("POST", "/api/payments", "user", b'{"amount":100,"currency":"EUR\\n"}', 422),
    "sub-not-a-uuid": ("GET", "/api/profile/me", "bad-sub", b"", 401),
}


@pytest.mark.parametrize("via", ["gateway", "service"])
@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_input_is_a_4xx_json_answer_on_a_connection_that_stays_usable(stack: Stack, case: str, via: str) -> None:
    method, path, who, body, expected = BAD_INPUT[case]
    headers = dict(_JSON)
    if who == "user":
        with stack.client() as gw:
            headers["Authorization"] = _user(gw)[1]["Authorization"].encode()
    elif who == "bad-sub":
        headers["Authorization"] = f"Bearer {_bad_sub_token()}".encode()
    service = path.split("/")[2]
    port = stack.env.services["api-gateway" if via == "gateway" else service].port  # type: ignore[index]
    version = ("GET", f"/api/{service}/version", {}, b"")
    (status, answer_headers, answer, _), after = _exchange(port, [(method, path, headers, body), version])
    assert status == expected, answer[:300]
    assert "error" in json.loads(answer)
    assert len(answer_headers["x-request-id"]) == 32
    assert after[0] == 200 and after[3], "the keep-alive connection did not survive the bad request"
    assert stack.processes[service].poll() is None


@pytest.mark.parametrize("port_of", ["api-gateway", "auth"])
def test_an_oversized_body_is_413_json_before_it_is_sent(stack: Stack, port_of: str) -> None:
    """As curl sends a large body: the head with `Expect: 100-continue`, then the body only after a 100."""
    port = stack.env.services[port_of].port  # type: ignore[index]
    head = (
        b"POST /api/auth/login HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\n"
        b"expect: 100-continue\r\ncontent-length: %d\r\n\r\n" % ((1 << 20) + 1)
    )
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head)
        answer = b""
        while not answer.endswith(b"}"):
            data = sock.recv(65536)
            if not data:
                break
            answer += data
    status_line, _, rest = answer.partition(b"\r\n")
    headers, _, body = rest.partition(b"\r\n\r\n")
    assert status_line.startswith(b"HTTP/1.1 413 "), answer[:200]
    assert b"connection: close" in headers.lower()
    assert json.loads(body)["error"] == "request body over 1048576 bytes"
    with stack.client(port_of) as again:
        assert again.get("/health/live").status_code == 200


@pytest.mark.parametrize("given", [b"\xff\xfe-not-utf8", "é".encode() * 100, b"a" * 129, b"ok id"])
def test_a_request_id_that_is_not_a_plain_token_is_replaced(stack: Stack, given: bytes) -> None:
    for name in ("api-gateway", "auth"):
        port = stack.env.services[name].port  # type: ignore[index]
        ((status, headers, _, _),) = _exchange(port, [("GET", "/health/live", {"X-Request-ID": given}, b"")])
        assert status == 200
        made = headers["x-request-id"]
        assert made != given.decode("latin-1") and len(made) == 32 and made.isalnum()


def test_a_trailing_slash_is_404_not_a_redirect_to_the_service(stack: Stack) -> None:
    with stack.client() as gw:
        _, auth = _user(gw)
        via_gateway = gw.get("/api/payments/", headers=auth)
    with stack.client("payments") as direct:
        at_service = direct.get("/api/payments/", headers=auth)
    for response in (via_gateway, at_service):
        assert response.status_code == 404
        assert "location" not in response.headers
        assert "127.0.0.1" not in response.text


def test_every_request_has_one_json_access_line(stack: Stack) -> None:
    rid = uuid.uuid4().hex
    with stack.client() as gw:
        _, auth = _user(gw)
        assert gw.get("/api/payments", headers={**auth, "X-Request-ID": rid}).status_code == 200
    for name in ("api-gateway", "payments"):

        def line(name: str = name) -> dict[str, Any] | None:
            for raw in stack.log(name).splitlines():
                entry = json.loads(raw) if raw.startswith("{") else {}
                if entry.get("request_id") == rid and entry.get("message") == "request":
                    return entry
            return None

        entry = poll(line)
        assert isinstance(entry, dict), f"no access line for {rid} in {name}"
        assert (entry["method"], entry["path"], entry["status"]) == ("GET", "/api/payments", 200)
        assert entry["user_id"] and entry["duration_ms"] >= 0 and entry["bytes"] > 0


def _token(gw: httpx.Client, email: str) -> str:
    answer = gw.post("/api/auth/login", json={"email": email, "password": "password 1"})
    assert answer.status_code == 200, answer.text
    return str(answer.json()["access_token"])


def _accepted(stack: Stack, token: str) -> tuple[int, int, int]:
    """What the gateway, auth itself and a service behind the gateway answer to this token."""
    headers = {"Authorization": f"Bearer {token}"}
    with stack.client() as gw, stack.client("auth") as auth, stack.client("payments") as payments:
        return (
            gw.get("/api/payments", headers=headers).status_code,
            auth.get("/api/auth/me", headers=headers).status_code,
            payments.get("/api/payments", headers=headers).status_code,
        )


def test_signing_keys_rotate_and_old_tokens_work_until_they_expire(stack: Stack) -> None:
    """The rotation the README gives: publish the new key, then sign with it, then drop the old one.
    Last in the module: it restarts every service (and puts the original key back at the end)."""
    from mfe_deploy.config import jwtkeys

    new = jwtkeys.new("itest-2")
    email = f"k-{uuid.uuid4().hex[:8]}@example.com"
    with stack.client() as gw:
        assert gw.post("/api/auth/register", json={"email": email, "password": "password 1"}).status_code == 201
        old_token = _token(gw, email)
    assert jwt.get_unverified_header(old_token)["kid"] == "itest"
    user = str(jwt.decode(old_token, options={"verify_signature": False})["sub"])
    early = jwt.encode(
        {"sub": user, "type": "access", "role": "user", "iat": int(time.time()), "exp": int(time.time()) + 600},
        Signer.parse(new.private.reveal()).key,
        algorithm="EdDSA",
        headers={"kid": "itest-2"},
    )
    assert _accepted(stack, old_token) == (200, 200, 200)
    assert _accepted(stack, early) == (401, 401, 401)  # a key nobody has published yet
    try:
        # 1. Published, not signing: every service accepts it; auth still signs with the old key.
        stack.restart_with(
            keys=["${ITEST_JWT_KEY}", "${ITEST_JWT_KEY_2}"],
            signing=None,
            environ={"ITEST_JWT_KEY_2": new.private.reveal()},
        )
        assert _accepted(stack, early) == (200, 200, 200)
        with stack.client() as gw:
            assert jwt.get_unverified_header(_token(gw, email))["kid"] == "itest"
        # 2. Signing with the new key: the old key's tokens still work until they expire.
        stack.restart_with(keys=["${ITEST_JWT_KEY}", "${ITEST_JWT_KEY_2}"], signing="itest-2", environ={})
        with stack.client() as gw:
            new_token = _token(gw, email)
        assert jwt.get_unverified_header(new_token)["kid"] == "itest-2"
        assert _accepted(stack, new_token) == (200, 200, 200)
        assert _accepted(stack, old_token) == (200, 200, 200)
        # 3. The old key removed (its tokens have expired by then, in real life): refused everywhere.
        stack.restart_with(keys=["${ITEST_JWT_KEY_2}"], signing=None, environ={})
        assert _accepted(stack, old_token) == (401, 401, 401)
        assert _accepted(stack, new_token) == (200, 200, 200)
        for name in ("api-gateway", "payments", "admin", "profile"):  # only auth holds a private key
            assert "JWT_SIGNING_KEY" not in dict(
                environments(stack.env, stack.secrets, Endpoints.local(stack.env))[name]
            )
    finally:
        stack.restart_with(keys=["${ITEST_JWT_KEY}"], signing=None, environ={})
