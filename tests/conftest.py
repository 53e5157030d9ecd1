from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TIERS = ("STAGING", "PRODUCTION")
SECRET_VARS = (
    "JWT_KEY",
    "POSTGRES_PASSWORD",
    "RABBITMQ_PASSWORD",
    "REDIS_PASSWORD",
    "SENTRY_DSN",
    "AUTH_DB_PASSWORD",
    "PAYMENTS_DB_PASSWORD",
    "ADMIN_DB_PASSWORD",
    "PROFILE_DB_PASSWORD",
)


# A fixed Ed25519 key (<kid>:<base64url>) for services started by hand, outside an environment.
TEST_JWT_KEY = "test:test-jwt-key-for-services-run-by-hand-01234"


def jwt_env(key: str = TEST_JWT_KEY) -> dict[str, str]:
    """What mfe-deploy renders for the issuer: the private key, and the public key every service verifies with."""
    from mfe_deploy.config import jwtkeys

    parsed = jwtkeys.parse(key)
    assert not isinstance(parsed, str), parsed
    return {"JWT_SIGNING_KEY": key, "JWT_PUBLIC_KEYS": parsed.public}


def access_token(user: int, key: str = TEST_JWT_KEY, ttl: int = 60) -> str:
    """An access token as auth issues it, for user 00000000-0000-4000-8000-<user, 12 digits>."""
    from mfe_services.common import tokens

    user_id = f"00000000-0000-4000-8000-{user:012d}"
    return tokens.issue(tokens.Signer.parse(key), user_id=user_id, email=f"u{user}@t.io", role="user", ttl=ttl)


def strong_secrets(tag: str = "canary") -> dict[str, str]:
    """Distinct, policy-passing values for every staging and production secret."""
    out = {}
    for tier in TIERS:
        for var in SECRET_VARS:
            out[f"{tier}_{var}"] = f"{tag}-{tier.lower()}-{var.lower().replace('_', '-')}-7f3a9c1e5b2d8f40"
        # A DSN must parse as one; its key is the canary, its address a closed port on the sender's own loopback.
        out[f"{tier}_SENTRY_DSN"] = f"http://{out[f'{tier}_SENTRY_DSN']}@127.0.0.1:9/42"
        # An Ed25519 key, <kid>:<43 base64url characters>: the characters are the canary, as they decode.
        out[f"{tier}_JWT_KEY"] = f"k1:{out[f'{tier}_JWT_KEY'][:43].ljust(43, 'A')}"
    return out


@dataclass
class Result:
    code: int
    out: str
    err: str


@dataclass
class Project:
    root: Path
    environ: dict[str, str]

    def env_file(self, name: str) -> Path:
        return self.root / "environments" / f"{name}.yaml"

    def edit(self, name: str, old: str, new: str) -> None:
        path = self.env_file(name)
        text = path.read_text()
        assert old in text, f"{old!r} not in {path}"
        path.write_text(text.replace(old, new, 1))

    def cli(self, *args: str, extra_env: Mapping[str, str] | None = None) -> Result:
        env = {**self.environ, **(extra_env or {})}
        proc = subprocess.run(
            [sys.executable, "-m", "mfe_deploy", "-C", str(self.root), *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            check=False,
        )
        return Result(proc.returncode, proc.stdout, proc.stderr)


def _base_environ() -> dict[str, str]:
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "PYTHONPATH", "VIRTUAL_ENV")
    env = {k: v for k, v in os.environ.items() if k in keep}
    env["COLUMNS"] = "200"
    return env


@pytest.fixture
def project(tmp_path: Path) -> Project:
    """A throwaway copy of the repository's environments, with strong secrets in the environment."""
    root = tmp_path / "project"
    shutil.copytree(REPO / "environments", root / "environments")
    return Project(root=root, environ={**_base_environ(), **strong_secrets()})


def _epmd_running() -> bool:
    return subprocess.run(["pgrep", "-x", "epmd"], capture_output=True).returncode == 0


_EPMD_BEFORE: list[bool] = []


def pytest_sessionstart(session: pytest.Session) -> None:
    _EPMD_BEFORE.append(_epmd_running())


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """RabbitMQ's first node starts Erlang's port mapper daemon; stop it if we were the ones. Not in a group
    of tests/groups.py: another group's nodes may still use it (scripts/test stops it after all)."""
    if os.environ.get("MFE_TEST_GROUP"):
        return
    if _EPMD_BEFORE and not _EPMD_BEFORE[0] and _epmd_running():
        epmd = shutil.which("epmd") or "/usr/lib/erlang/bin/epmd"
        subprocess.run([epmd, "-kill"], capture_output=True, check=False)
