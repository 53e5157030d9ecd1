from __future__ import annotations

import os
from pathlib import Path

import pytest

from mfe_deploy.config import loader
from mfe_deploy.render import Bundle, Capabilities, render
from tests.conftest import REPO, strong_secrets

GOLDEN = Path(__file__).parent / "golden"
ENVS = ("development", "staging", "production")


def _render(name: str, caps: Capabilities | None = None) -> Bundle:
    loaded, secrets = loader.load_with_secrets(REPO, name, environ=strong_secrets("golden"))
    return render(loaded.env, secrets, caps=caps or Capabilities())


@pytest.mark.parametrize("name", ENVS)
def test_bundle_matches_golden_files(name: str) -> None:
    bundle = _render(name)
    folder = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN") == "1":
        for path, file in bundle.files.items():
            (folder / path).parent.mkdir(parents=True, exist_ok=True)
            (folder / path).write_text(file.text)
    on_disk = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    assert on_disk == sorted(bundle.files)
    for path, file in bundle.files.items():
        assert file.text == (folder / path).read_text(), f"{name}/{path} differs (UPDATE_GOLDEN=1 to accept)"


@pytest.mark.parametrize("name", ENVS)
def test_rendering_is_deterministic(name: str) -> None:
    assert _render(name).files == _render(name).files


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (
            "development",
            [
                "compose.yml",
                "env/admin.env",
                "env/api-gateway.env",
                "env/auth.env",
                "env/payments.env",
                "env/postgres.env",
                "env/profile.env",
                "initdb/10-databases.sql",
            ],
        ),
        (
            "staging",
            [
                "compose.yml",
                "env/admin.env",
                "env/api-gateway.env",
                "env/auth.env",
                "env/payments.env",
                "env/postgres.env",
                "env/profile.env",
                "env/rabbitmq.env",
                "env/redis.conf",
                "initdb/10-databases.sql",
                "nginx/nginx.conf",
            ],
        ),
    ],
)
def test_bundle_layout(name: str, expected: list[str]) -> None:
    bundle = _render(name)
    assert list(bundle.files) == expected
    assert {p for p, f in bundle.files.items() if f.secret} == {p for p in expected if p.startswith("env/")}


def test_old_engines_get_no_start_interval_and_a_short_interval() -> None:
    modern = _render("staging").files["compose.yml"].text
    old = _render("staging", Capabilities(healthcheck_start_interval=False)).files["compose.yml"].text
    assert "start_interval: 1s" in modern
    assert "start_interval" not in old
    assert "interval: 2s" in old


def test_the_gateways_container_check_is_its_own_process_not_the_services_behind_it() -> None:
    """A service out of reach for a moment must not make the engine restart (Swarm: roll back) a sound
    gateway: its healthcheck asks /health/live; every other service, and a gateway whose health path
    was set, is asked its health path."""
    import yaml

    loaded, secrets = loader.load_with_secrets(REPO, "staging", environ=strong_secrets("golden"))
    compose = yaml.safe_load(render(loaded.env, secrets).files["compose.yml"].text)
    asked = {name: compose["services"][name]["healthcheck"]["test"][-1] for name in loaded.env.services}
    gateway = loaded.env.gateway
    assert "GET /health/live " in asked.pop(gateway)
    assert asked and all("GET /health " in code for code in asked.values()), asked
    own = loaded.env.services[gateway].model_copy(update={"health": "/ready"})
    env = loaded.env.model_copy(update={"services": {**loaded.env.services, gateway: own}})
    compose = yaml.safe_load(render(env, secrets).files["compose.yml"].text)
    assert "GET /ready " in compose["services"][gateway]["healthcheck"]["test"][-1]


def test_database_urls_quote_passwords() -> None:
    environ = {**strong_secrets("golden"), "STAGING_AUTH_DB_PASSWORD": "p@ss/word:with#chars-0123456789"}
    loaded, secrets = loader.load_with_secrets(REPO, "staging", environ=environ)
    text = render(loaded.env, secrets).files["env/auth.env"].text
    assert "DATABASE_URL='postgresql://auth_app:p%40ss%2Fword%3Awith%23chars-0123456789@postgres:5432/auth_db'" in text


def test_hsts_covers_subdomains_only_when_asked_and_files_mode_staples() -> None:
    loaded, secrets = loader.load_with_secrets(REPO, "production", environ=strong_secrets("golden"))
    plain = render(loaded.env, secrets).files["nginx/nginx.conf"].text
    assert 'add_header Strict-Transport-Security "max-age=63072000" always;' in plain
    assert "includeSubDomains" not in plain
    nginx = loaded.env.nginx.model_copy(update={"hsts_include_subdomains": True})
    opted = render(loaded.env.model_copy(update={"nginx": nginx}), secrets).files["nginx/nginx.conf"].text
    assert plain.count("max-age=63072000") == opted.count("max-age=63072000; includeSubDomains") > 0
    # OCSP stapling in files mode (a CA's certificate names a responder), through the engine's DNS.
    assert "ssl_stapling on;" in plain and "resolver 127.0.0.11 valid=1s ipv6=off;" in plain
    assert "ssl_stapling" not in _render("staging").files["nginx/nginx.conf"].text  # self-signed: no responder


def test_a_services_stop_timeout_reaches_docker_and_the_service() -> None:
    """stop_grace_period (SIGTERM to SIGKILL) and the service's own STOP_TIMEOUT, from which it takes its
    shutdown's share after the drain (mfe_services.__main__.graceful_seconds)."""
    from mfe_services.__main__ import graceful_seconds

    loaded, secrets = loader.load_with_secrets(REPO, "staging", environ=strong_secrets("golden"))
    auth = loaded.env.services["auth"].model_copy(update={"stop_timeout": "45s"})
    env = loaded.env.model_copy(update={"services": {**loaded.env.services, "auth": auth}})
    bundle = render(env, secrets)
    compose = bundle.files["compose.yml"].text
    section = compose.split("\n  auth:\n", 1)[1].split("\n\n", 1)[0]
    assert "stop_grace_period: 45s" in section
    assert compose.count("stop_grace_period: 20s") == len(env.services) - 1
    assert "STOP_TIMEOUT='45'\n" in bundle.files["env/auth.env"].text
    assert (graceful_seconds("45"), graceful_seconds("20"), graceful_seconds("2"), graceful_seconds(None)) == (
        42,
        17,
        1,
        17,
    )


@pytest.mark.parametrize(
    ("image", "directive"),
    [
        ("nginx:1.27", True),
        ("nginx:1.25.1-alpine", True),
        ("nginx:1.25", True),
        ("registry:5000/nginx:1.26.2", True),
        ("nginx:1.25.0", False),
        ("mfe-local/nginx:1.22", False),
        ("nginx:latest", False),
        ("nginx", False),
    ],
)
def test_http2_is_the_directive_where_the_nginx_image_knows_it(image: str, directive: bool) -> None:
    from mfe_deploy.render import NginxPaths, has_http2_directive, nginx_conf

    assert has_http2_directive(image) is directive
    loaded, _ = loader.load_with_secrets(REPO, "production", environ=strong_secrets("golden"))
    env = loaded.env.model_copy(update={"images": loaded.env.images.model_copy(update={"nginx": image})})
    conf = nginx_conf(env, NginxPaths())
    assert ("http2 on;" in conf, "listen 443 ssl http2;" in conf) == (directive, not directive)
