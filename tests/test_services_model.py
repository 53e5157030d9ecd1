"""Services as data, in pure code: the bundled defaults, removing a service, a service of yours in the
rendered bundle, and the gateway's routing table read back from what was rendered."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from mfe_deploy.config import jwtkeys, loader
from mfe_deploy.render import render
from mfe_services.common.settings import Settings
from mfe_services.gateway.app import Gateway
from tests.conftest import REPO


def _load(tmp_path: Path, extra: str) -> loader.Loaded:
    shutil.copytree(REPO / "environments", tmp_path / "environments")
    (tmp_path / "environments" / "x.yaml").write_text("extends: development\n" + extra)
    return loader.load(tmp_path, "x")


def _env_file(text: str) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#"))
    return {key: value.strip("'") for key, value in pairs}


def test_bundled_services_get_their_role_database_and_routes_from_the_defaults(tmp_path: Path) -> None:
    env = _load(tmp_path, "").env
    assert env.gateway == "api-gateway"
    assert env.database_services == ["auth", "payments", "admin", "profile"]
    assert "POST /api/auth/login" in env.services["auth"].routes.public
    assert env.services["payments"].routes.public == ()


def test_a_service_set_to_null_is_gone_everywhere(tmp_path: Path) -> None:
    loaded = _load(tmp_path, "services:\n  payments: ~\nsecrets:\n  databases:\n    payments: ~\n")
    _, secrets = loader.load_with_secrets(tmp_path, "x", {})
    bundle = render(loaded.env, secrets)
    assert "payments" not in bundle.files["compose.yml"].text
    assert "payments" not in bundle.files["initdb/10-databases.sql"].text
    gateway = _env_file(bundle.files["env/api-gateway.env"].text)
    assert "PAYMENTS_SERVICE_URL" not in gateway and "payments" not in json.loads(gateway["ROUTES"])
    assert "env/payments.env" not in bundle.files


def test_a_service_of_yours_is_rendered_and_routed(tmp_path: Path) -> None:
    extra = (
        "services:\n  notifications:\n    port: 3005\n    image: example/notifications:1\n    database: true\n"
        "    routes: {prefix: /api/auth/notices, public: ['GET /api/auth/notices/status']}\n"
        "    env: {GREETING: hi}\n    depends_on: [auth]\n"
        "secrets:\n  databases:\n    notifications: ${N_DB:-n-dev-password}\n"
    )
    loaded = _load(tmp_path, extra)
    _, secrets = loader.load_with_secrets(tmp_path, "x", {})
    bundle = render(loaded.env, secrets)
    compose = bundle.files["compose.yml"].text
    assert 'image: "example/notifications:1"' in compose
    assert "notifications_app" in bundle.files["initdb/10-databases.sql"].text
    own = _env_file(bundle.files["env/notifications.env"].text)
    assert own["GREETING"] == "hi" and own["DATABASE_URL"].startswith("postgresql://notifications_app:")
    # The gateway's settings, read from the very file that was rendered, route the nested prefix to the
    # service of yours (longest prefix first) and let its one public path through without a token.
    gateway_env = _env_file(bundle.files["env/api-gateway.env"].text)
    gateway = Gateway(Settings.from_env("api-gateway", gateway_env))
    assert gateway._route("/api/auth/notices/status") == "notifications"
    assert gateway._route("/api/auth/login") == "auth"
    assert ("GET", "/api/auth/notices/status") in gateway.public and ("POST", "/api/auth/login") in gateway.public
    assert ("GET", "/api/auth/notices/other") not in gateway.public


def test_routes_that_name_an_unknown_upstream_are_refused() -> None:
    with pytest.raises(ValueError, match="ROUTES names billing"):
        Settings.from_env(
            "api-gateway", {"JWT_PUBLIC_KEYS": jwtkeys.new("t").public, "ROUTES": '{"billing": {"prefix": "/b"}}'}
        )
