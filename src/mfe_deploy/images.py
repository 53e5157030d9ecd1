"""Service images: a wheelhouse built on the host (no network inside builds), one image per service,
tagged <prefix>/<service>:<version>."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from mfe_deploy.errors import MfeError

REPO = Path(__file__).resolve().parents[2]


class BuildFailed(MfeError):
    exit_code = 1


def _run(argv: list[str], what: str, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
        raise BuildFailed(f"{what} failed:\n{tail}")
    return done.stdout


def base_python(base_image: str) -> str:
    code = "import sys; print('%d.%d' % sys.version_info[:2])"
    return _run(["docker", "run", "--rm", "--network", "none", "--entrypoint", "python3", base_image, "-c", code],
                f"asking {base_image} for its Python version").strip()  # fmt: skip


def wheelhouse(services_dir: Path, folder: Path, python_version: str) -> Path:
    """Third-party wheels for the target Python, cached by lock file; the services' own wheel, fresh."""
    lock = services_dir / "requirements.lock"
    key = hashlib.sha256(lock.read_bytes() + python_version.encode()).hexdigest()[:16]
    deps = folder / f"deps-{key}"
    if not (deps / ".complete").exists():
        shutil.rmtree(deps, ignore_errors=True)
        _run([sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check", "--require-hashes",
              "--only-binary=:all:", "--implementation", "cp", "--python-version", python_version,
              "--platform", "manylinux2014_x86_64", "--platform", "manylinux_2_17_x86_64",
              "--platform", "manylinux_2_28_x86_64", "-r", str(lock), "-d", str(deps)],
             "downloading the services' wheels")  # fmt: skip
        (deps / ".complete").touch()
    house = folder / "context" / "wheelhouse"
    shutil.rmtree(house, ignore_errors=True)
    house.mkdir(parents=True)
    for wheel in deps.glob("*.whl"):
        os.link(wheel, house / wheel.name)
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--disable-pip-version-check", "--no-deps",
          "--no-build-isolation", "-w", str(house), str(services_dir)], "building the services' wheel")  # fmt: skip
    return house.parent


def exists(tag: str) -> bool:
    return subprocess.run(["docker", "image", "inspect", tag], capture_output=True, check=False).returncode == 0


def image_ids(tags: list[str]) -> dict[str, str]:
    """Image id per tag, in one call; a missing tag maps to "" (inspect still answers for the others)."""
    found: dict[str, str] = dict.fromkeys(tags, "")
    if not tags:
        return found
    fmt = "{{.Id}} {{json .RepoTags}}"
    done = subprocess.run(["docker", "image", "inspect", "--format", fmt, *tags], capture_output=True, text=True)
    for line in done.stdout.splitlines():
        image, _, repo_tags = line.partition(" ")
        for tag in json.loads(repo_tags or "[]"):
            if tag in found:
                found[tag] = image
    return found


def build(services_dir: Path, context: Path, *, base: str, service: str, version: str, tag: str) -> None:
    _run(["docker", "build", "-q", "-f", str(services_dir / "Dockerfile"), "--build-arg", f"BASE_IMAGE={base}",
          "--build-arg", f"SERVICE={service}", "--build-arg", f"VERSION={version}", "-t", tag, str(context)],
         f"building {tag}", env={**os.environ, "DOCKER_BUILDKIT": os.environ.get("DOCKER_BUILDKIT", "0")})  # fmt: skip


def tags(prefix: str, service: str) -> list[str]:
    out = subprocess.run(["docker", "image", "ls", "--format", "{{.Tag}}", f"{prefix}/{service}"],
                         capture_output=True, text=True, check=False).stdout  # fmt: skip
    return [t for t in out.split() if t and t != "<none>"]


def created(tag: str) -> str:
    done = subprocess.run(
        ["docker", "image", "inspect", "--format", "{{.Created}}", tag], capture_output=True, text=True
    )
    return done.stdout.strip()


def plan_prune(tags_by_age: list[str], keep: int, protected: set[str]) -> list[str]:
    """Tags to delete: all but the newest `keep`, except those a recorded release still needs."""
    return [t for t in tags_by_age[keep:] if t not in protected]


def remove(tag: str) -> bool:
    return subprocess.run(["docker", "image", "rm", tag], capture_output=True, check=False).returncode == 0
