"""Redis users per service (staging and production, where Redis asks for passwords), on a real redis-server
reading the configuration mfe-deploy renders, through the redis client the services use."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import redis
from redis.exceptions import AuthenticationError, NoPermissionError

from mfe_deploy.config import loader, urls
from mfe_deploy.config.secrets import Secrets
from mfe_deploy.render import render
from tests.conftest import REPO, strong_secrets
from tests.pg import free_port
from tests.servers import wait_until

SERVICES = ("auth", "payments", "admin", "profile")


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[int, Secrets, dict[str, str]]]:
    """redis-server on the staging bundle's env/redis.conf; the services' REDIS_URLs from their env files."""
    loaded, secrets = loader.load_with_secrets(REPO, "staging", environ=strong_secrets("acl"))
    assert secrets is not None
    bundle = render(loaded.env, secrets)
    binary = shutil.which("redis-server")
    assert binary, "redis-server not found: run scripts/setup-system"
    folder = Path(tempfile.mkdtemp(prefix="mfe-acl-"))
    conf = folder / "redis.conf"
    conf.write_text(bundle.files["env/redis.conf"].text)
    conf.chmod(0o600)
    port = free_port()
    process = subprocess.Popen(
        [binary, str(conf), "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", str(folder)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    service_urls = {}
    for name in SERVICES:
        line = next(x for x in bundle.files[f"env/{name}.env"].text.splitlines() if x.startswith("REDIS_URL="))
        parts = urlsplit(line.split("=", 1)[1].strip("'"))
        service_urls[name] = parts._replace(netloc=f"{parts.username}:{parts.password}@127.0.0.1:{port}").geturl()
    try:
        wait_until(lambda: _answers(port), 10, "redis")
        yield port, secrets, service_urls
    finally:
        process.terminate()
        process.wait(timeout=20)
        shutil.rmtree(folder, ignore_errors=True)


def _answers(port: int) -> bool:
    try:
        redis.Redis(port=port, socket_timeout=1).ping()
    except AuthenticationError:  # NOAUTH: up, and asking who we are (a ConnectionError to the client)
        return True
    except redis.exceptions.ConnectionError:
        return False
    return True


def test_the_configuration_holds_no_password_in_the_clear(server: tuple[int, Secrets, dict[str, str]]) -> None:
    _, secrets, _ = server
    loaded, _ = loader.load_with_secrets(REPO, "staging", environ=strong_secrets("acl"))
    text = urls.redis_conf(loaded.env, secrets)
    assert secrets.redis_password is not None and secrets.redis_password.reveal() not in text
    assert not [s for s in secrets.redis_users.values() if s.reveal() in text]
    assert len({s.reveal() for s in secrets.redis_users.values()}) == len(SERVICES)  # each its own


def test_the_default_user_is_off_and_the_operator_may_do_anything(
    server: tuple[int, Secrets, dict[str, str]],
) -> None:
    port, secrets, _ = server
    with pytest.raises(AuthenticationError):  # NOAUTH: no user without a password
        redis.Redis(port=port).get("x")
    with pytest.raises(AuthenticationError):  # the administrator's password is not the default user's
        assert secrets.redis_password is not None
        redis.Redis(port=port, password=secrets.redis_password.reveal()).ping()
    assert secrets.redis_password is not None
    operator = redis.Redis(port=port, username=urls.OPERATOR, password=secrets.redis_password.reveal())
    assert operator.set("auth:k", "v") and operator.get("auth:k") == b"v" and operator.dbsize() >= 1


def test_each_service_reaches_its_own_keys_and_the_event_stream_and_nothing_else(
    server: tuple[int, Secrets, dict[str, str]],
) -> None:
    _, _, service_urls = server
    for name, url in service_urls.items():
        client = redis.Redis.from_url(url)
        assert client.set(f"{name}:cache:1", "mine", ex=60) and client.get(f"{name}:cache:1") == b"mine"
        assert client.xadd(urls.STREAM, {"event": name})  # every service publishes and reads the events
        assert client.xadd(f"{urls.STREAM}:dead:{name}", {"event": "x"})
        for other in (o for o in SERVICES if o != name):
            with pytest.raises(NoPermissionError):
                client.get(f"{other}:cache:1")
            with pytest.raises(NoPermissionError):
                client.delete(f"{other}:cache:1")
            with pytest.raises(NoPermissionError):
                client.xadd(f"{urls.STREAM}:dead:{other}", {"event": "x"})
        for forbidden in (("FLUSHALL",), ("KEYS", "*"), ("CONFIG", "GET", "requirepass"), ("SCAN", "0")):
            with pytest.raises(NoPermissionError):
                client.execute_command(*forbidden)
        with pytest.raises(NoPermissionError):
            client.eval("return redis.call('GET', KEYS[1])", 1, f"{name}:cache:1")


def test_the_stack_works_on_the_redis_hub_with_a_user_per_service(tmp_path: Path) -> None:
    """The local runtime with redis_password on the Redis Streams hub: a registration's user.registered
    goes from auth to profile through the stream, each service as its own Redis user."""
    from tests.local_project import make_local_project
    from tests.stack import poll
    from tests.test_services_e2e import _profile, _user

    p = make_local_project(
        tmp_path / "project",
        "acl",
        extra_yaml="secrets:\n  redis_password: ${ACL_REDIS}\n",
        extra_environ={"ACL_REDIS": "a-long-redis-password-for-acl-1234"},
    )
    up = p.cli("up", "--env", "acl")
    assert up.returncode == 0, up.stdout + up.stderr
    try:
        env_file = next(p.root.glob(".mfe/acl/**/env/profile.env"))
        assert "REDIS_URL='redis://profile:" in env_file.read_text()
        with p.gateway() as gw:
            _, auth = _user(gw)
            assert poll(lambda: _profile(gw, auth)) is not None  # created from the event, through the stream
        assert p.cli("health", "--env", "acl").returncode == 0
    finally:
        p.cli("down", "--env", "acl", "--volumes", "--yes")
