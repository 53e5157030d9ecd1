"""The services' RabbitMQ users as values: who gets one, how its password is derived, what the
definitions carry (the broker's acceptance of them is tested on a real RabbitMQ in test_events.py)."""

from __future__ import annotations

import base64
import hashlib
import json
import re

from mfe_deploy import hub
from mfe_deploy.config import loader
from mfe_deploy.config.secrets import Secrets
from tests.conftest import REPO, strong_secrets


def _load(env: str = "staging", **extra: str) -> Secrets:
    _, secrets = loader.load_with_secrets(REPO, env, environ={**strong_secrets(), **extra})
    return secrets


def test_every_service_but_the_gateway_gets_its_own_derived_password() -> None:
    secrets = _load()
    admin = secrets.rabbitmq_password
    assert admin is not None
    users = {name: s.reveal() for name, s in secrets.hub_users.items()}
    assert sorted(users) == ["admin", "auth", "payments", "profile"]
    assert len(set(users.values())) == 4 and admin.reveal() not in users.values()
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{43}", p) for p in users.values())
    assert {n: s.reveal() for n, s in _load().hub_users.items()} == users  # the same on every load
    rotated = _load(STAGING_RABBITMQ_PASSWORD="another-rabbitmq-admin-password-42")
    assert not set(users.values()) & {s.reveal() for s in rotated.hub_users.values()}
    assert set(users.values()) <= set(secrets.maskable())


def test_the_redis_hub_has_no_rabbitmq_users() -> None:
    assert _load("development").hub_users == {}


def test_definitions_carry_salted_hashes_and_confining_permissions() -> None:
    secrets = _load()
    document = json.loads(hub.definitions(secrets, salt=lambda n: b"salt"[:n]).reveal())
    assert [u["name"] for u in document["users"]] == ["admin", "auth", "payments", "profile"]
    for user in document["users"]:
        raw = base64.b64decode(user["password_hash"])
        password = secrets.hub_users[user["name"]].reveal()
        assert raw == b"salt" + hashlib.sha256(b"salt" + password.encode()).digest()
        assert user["hashing_algorithm"] == "rabbit_password_hashing_sha256" and user["tags"] == []
        assert password not in json.dumps(document)
    grant = {g["user"]: g for g in document["permissions"]}["payments"]
    assert grant["configure"] == grant["write"] == grant["read"] == hub.permissions("payments")


def test_permissions_match_the_shared_exchanges_and_the_services_own_queues_only() -> None:
    allowed = re.compile(hub.permissions("api-gateway"))
    for name in ("mfe.events", "mfe.events.dead", "api-gateway.events", "api-gateway.events.dead"):
        assert allowed.fullmatch(name), name
    for name in ("auth.events", "api-gatewayXevents", "mfe.events.x", "amq.topic", "api-gateway.events.dead.x", ""):
        assert not allowed.search(name), name
